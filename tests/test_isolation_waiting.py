"""Issue 11: requests waiting for the worker (``?wait=``) never hold every thread of a web process.

A real threaded HTTP server (pytest-django's ``live_server``) serves the requests; a worker node
with a fresh heartbeat that does not act stands in for a slow worker, and the test itself then
writes what the worker writes when the tunnel runs. With ``MAX_WAITING = 1`` and one request
waiting, others answer at once as with ``wait=0``; once it is done, waiting works again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests
from django.db.models import F
from django.utils import timezone

from tests.conftest import client_for
from tunnels import services, waiting
from tunnels.models import Status, Tunnel, WorkerNode

pytestmark = pytest.mark.django_db(transaction=True)


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def act_as_worker(tunnel: Tunnel) -> None:
    """What the worker writes once the tunnel runs at its current generation."""
    Tunnel.objects.filter(pk=tunnel.pk).update(
        status=Status.RUNNING, running_generation=F("generation"), pid=4242, status_changed_at=timezone.now()
    )


class Background:
    """One HTTP request answered in a thread of its own."""

    def __init__(self, method: str, url: str, headers: dict) -> None:
        self.response: requests.Response | None = None
        self.thread = threading.Thread(target=self._run, args=(method, url, headers), daemon=True)
        self.thread.start()

    def _run(self, method: str, url: str, headers: dict) -> None:
        self.response = requests.request(method, url, headers=headers, timeout=60)

    def result(self) -> requests.Response:
        self.thread.join(60)
        assert self.response is not None
        return self.response


@pytest.fixture
def one_slot(settings):
    settings.MAX_WAITING = 1
    WorkerNode.objects.create(name="slow", last_seen=timezone.now() + timezone.timedelta(minutes=5))


@pytest.fixture
def auth(owner) -> dict:
    return {"Authorization": f"Bearer {client_for(owner).raw_token}"}


def http(method: str, url: str, auth: dict) -> requests.Response:
    return requests.request(method, url, headers=auth, timeout=60)


def make(owner, port: int) -> Tunnel:
    data = {"remote_host": "u@h", "remote_port": "80", "local_port": str(port)}
    return services.create_tunnel(owner, data, start=False)


def hold_the_slot(live_server, auth, tunnel: Tunnel) -> Background:
    waiter = Background("GET", f"{live_server.url}/api/v1/calls/connect?tunnel={tunnel.hash}&wait=30", auth)
    eventually(lambda: waiting.SLOTS.in_use == 1)
    return waiter


def test_beyond_the_limit_every_surface_answers_at_once_as_with_wait_0(live_server, owner, auth, one_slot):
    first, second, third = make(owner, 23461), make(owner, 23462), make(owner, 23467)
    waiter = hold_the_slot(live_server, auth, first)

    call = http("GET", f"{live_server.url}/api/v1/calls/connect?tunnel={second.hash}&wait=30", auth)
    assert call.status_code == 202, call.json()
    assert call.json()["error_code"] == 0 and call.json()["message"].startswith("queued: starting")
    action = http("POST", f"{live_server.url}/api/v1/tunnels/{second.uuid}/restart/?wait=30", auth)
    assert action.status_code == 200
    assert action.json()["output"].startswith("queued: starting, worker has not confirmed yet")
    compat = http("POST", f"{live_server.url}/api/autossh/start/{third.hash}?wait=30", auth)
    assert compat.status_code == 200
    assert "queued: starting, worker has not confirmed yet" in compat.json()["output"]
    test = http("POST", f"{live_server.url}/api/v1/tunnels/{second.uuid}/test/?wait=30", auth)
    assert test.status_code == 202 and test.json()["state"] == "pending"
    # All four answered while the first request still holds the only slot.
    assert waiter.thread.is_alive() and waiting.SLOTS.in_use == 1

    act_as_worker(first)
    answer = waiter.result()
    assert (answer.status_code, answer.json()["message"]) == (200, "OK")
    assert waiting.SLOTS.in_use == 0


def test_once_the_waiting_request_is_done_the_next_one_waits(live_server, owner, auth, one_slot):
    first, second = make(owner, 23463), make(owner, 23464)
    waiter = hold_the_slot(live_server, auth, first)
    busy = http("GET", f"{live_server.url}/api/v1/calls/connect?tunnel={second.hash}&wait=30", auth)
    assert busy.status_code == 202
    act_as_worker(first)
    assert waiter.result().status_code == 200

    # The slot is free again: this request waits until the worker acts, then reports it running.
    again = Background("POST", f"{live_server.url}/api/v1/tunnels/{second.uuid}/start/?wait=30", auth)
    eventually(lambda: waiting.SLOTS.in_use == 1)
    act_as_worker(second)
    answer = again.result()
    assert answer.status_code == 200
    assert answer.json()["output"] == "started, pid 4242"
    assert waiting.SLOTS.in_use == 0


def test_a_request_that_times_out_gives_its_slot_back(live_server, owner, auth, one_slot):
    first, second = make(owner, 23465), make(owner, 23466)
    answer = http("GET", f"{live_server.url}/api/v1/calls/connect?tunnel={first.hash}&wait=0.2", auth)
    assert answer.status_code == 409  # waited, the worker did not confirm in time
    assert waiting.SLOTS.in_use == 0
    waiter = hold_the_slot(live_server, auth, second)
    act_as_worker(second)
    assert waiter.result().status_code == 200


def test_start_all_waits_in_one_slot_for_every_tunnel(live_server, owner, auth, one_slot):
    first, second = make(owner, 23468), make(owner, 23469)
    waiter = Background("POST", f"{live_server.url}/start?wait=30", auth)
    eventually(lambda: waiting.SLOTS.in_use == 1)
    # While it waits, a second start-all finds no free slot and answers at once.
    busy = http("POST", f"{live_server.url}/api/autossh/start?wait=30", auth)
    assert busy.status_code == 200
    assert "queued: starting, worker has not confirmed yet" in busy.json()["output"]
    act_as_worker(first)
    time.sleep(0.3)
    assert waiter.thread.is_alive()  # still waiting for the second tunnel
    act_as_worker(second)
    answer = waiter.result()
    assert answer.status_code == 200
    assert answer.json()["output"].splitlines() == [
        "Starting 2 tunnel(s)",
        f"{first.name} ({first.hash}): started, pid 4242",
        f"{second.name} ({second.hash}): started, pid 4242",
    ]
    assert waiting.SLOTS.in_use == 0


def test_a_slot_is_released_when_the_wait_raises(settings):
    settings.MAX_WAITING = 1
    with pytest.raises(RuntimeError), waiting.SLOTS.slot() as held:
        assert held
        raise RuntimeError("the database went away")
    with waiting.SLOTS.slot() as held:
        assert held


def test_max_waiting_0_never_waits(settings):
    settings.MAX_WAITING = 0
    with waiting.SLOTS.slot() as held:
        assert not held
