"""``?wait=N`` keeps its promise, and a briefly stale heartbeat is not "no worker is running".

The worker is played by a thread writing the rows a worker writes (its heartbeat, the tunnel's
status): what is tested is how the web side waits and what it says, not the worker.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from tests.factories import make_tunnel
from tests.faultdb import elapsed
from tunnels import services
from tunnels.models import Desired, Status, Tunnel, WorkerNode

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

MARGIN = 1.0  # seconds a wait may overrun its promise


def stopped_tunnel(owner) -> Tunnel:
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(desired_state=Desired.STOPPED)
    tunnel.refresh_from_db()
    return tunnel


def node_seen(seconds_ago: float, name: str = "node-1") -> None:
    WorkerNode.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now() - timedelta(seconds=seconds_ago)}
    )


def later(delay: float, action) -> threading.Thread:
    """Run ``action`` in another thread (its own database connection) after ``delay`` seconds."""

    def run() -> None:
        try:
            time.sleep(delay)
            action()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def worker_starts(tunnel: Tunnel, pid: int = 4242) -> None:
    """What the worker writes once the tunnel runs (after the request set it to run)."""
    row = Tunnel.objects.get(pk=tunnel.pk)
    assert row.desired_state == Desired.RUNNING
    Tunnel.objects.filter(pk=tunnel.pk).update(
        status=Status.RUNNING, running_generation=row.generation, pid=pid, status_changed_at=timezone.now()
    )


def start(client, tunnel: Tunnel, wait: float) -> tuple[str, float]:
    began = time.monotonic()
    response = client.post(f"/api/v1/tunnels/{tunnel.uuid}/start/?wait={wait}")
    assert response.status_code == 200, response.content
    return response.json()["output"], elapsed(began)


LEASE = settings.WORKER_LEASE_SECONDS


@pytest.mark.parametrize(
    ("age", "gone", "late"),
    [
        (None, True, False),  # no node ever reported
        (1.0, False, False),
        (LEASE + 5, False, True),  # past the lease: busy, or back after a database outage
        (LEASE + services.WORKER_GRACE - 1, False, True),
        (LEASE + services.WORKER_GRACE + 1, True, False),
    ],
)
def test_heartbeat_rule(age, gone, late):
    heartbeat = services.Heartbeat(age)
    assert (heartbeat.gone, heartbeat.late) == (gone, late)


def test_no_worker_only_after_the_wait_had_a_chance():
    gone = services.Heartbeat(None)
    assert not services.no_worker(gone, waited=0.0, timeout=5)
    assert services.no_worker(gone, waited=services.WORKER_CHANCE, timeout=5)
    assert services.no_worker(gone, waited=0.0, timeout=0)  # wait=0: the answer comes at once
    assert not services.no_worker(services.Heartbeat(LEASE + 5), waited=30, timeout=30)


def test_a_late_heartbeat_is_waited_for_and_the_worker_is_seen_to_act(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    node_seen(LEASE + 5)  # the case: the database just came back, the heartbeat is old
    acting = later(0.7, lambda: worker_starts(tunnel))
    output, took = start(owner_client, tunnel, wait=5)
    acting.join()
    assert output == "started, pid 4242"
    assert 0.6 < took < 5


def test_a_late_heartbeat_without_action_waits_its_time_and_says_so(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    node_seen(LEASE + 5)
    output, took = start(owner_client, tunnel, wait=1.5)
    assert "no worker" not in output
    assert output.startswith("queued: starting, worker has not confirmed yet (status stopped; last worker heartbeat")
    assert 1.5 <= took < 1.5 + MARGIN


def test_a_silent_worker_with_a_fresh_heartbeat_gets_the_whole_wait_and_no_more(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    node_seen(0)
    output, took = start(owner_client, tunnel, wait=2)
    assert output == "queued: starting, worker has not confirmed yet (status stopped)"
    assert 2 <= took < 2 + MARGIN


def test_a_gone_worker_is_named_after_one_more_look(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    node_seen(LEASE + services.WORKER_GRACE + 5)
    output, took = start(owner_client, tunnel, wait=10)
    assert output == "queued: no worker is running"
    assert services.WORKER_CHANCE <= took < services.WORKER_CHANCE + MARGIN + 0.5


def test_a_worker_returning_within_the_chance_is_waited_for(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    node_seen(LEASE + services.WORKER_GRACE + 5)
    back = later(0.5, lambda: node_seen(0))  # its first act on coming back is a heartbeat
    acting = later(1.6, lambda: worker_starts(tunnel))
    output, took = start(owner_client, tunnel, wait=5)
    back.join()
    acting.join()
    assert output == "started, pid 4242"


def test_without_any_node_wait_zero_answers_at_once(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    output, took = start(owner_client, tunnel, wait=0)
    assert output == "queued: no worker is running" and took < MARGIN


def test_a_connection_test_is_waited_for_while_the_heartbeat_is_late(owner, owner_client):
    tunnel = make_tunnel(owner)
    node_seen(LEASE + 5)
    began = time.monotonic()
    response = owner_client.post(f"/api/v1/tunnels/{tunnel.uuid}/test/?wait=1.5")
    took = elapsed(began)
    assert response.status_code == 202 and response.json()["state"] == "pending"
    assert 1.5 <= took < 1.5 + MARGIN  # waited for the late worker, no longer than promised


def test_a_connection_test_without_a_worker_answers_after_one_look(owner, owner_client):
    tunnel = make_tunnel(owner)
    began = time.monotonic()
    response = owner_client.post(f"/api/v1/tunnels/{tunnel.uuid}/test/?wait=10")
    assert response.status_code == 202
    assert elapsed(began) < services.WORKER_CHANCE + MARGIN
