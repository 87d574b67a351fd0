"""End-to-end through the REST API: an interactive tunnel run by the real worker through the real
password sshd (tests/interactive_servers.py), started, prompted and answered over HTTP only.

start?wait= ends at the prompt (needs answer: …), GET/POST prompt/ logs in, the tunnel carries traffic,
the password is nowhere in plain form; a killed master reads needs_auth / DEAD / offline 24 on every
surface, and a start with the answer up front brings it back.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import client_for
from tests.interactive_servers import password_sshd
from tests.procs import pool_port, wait_for
from tests.secret_scan import find_secret
from tests.worker_fixtures import wait_fetch
from tunnels.models import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pw_sshd(tmp_path_factory):
    with password_sshd(tmp_path_factory.mktemp("pwsshd-api")) as server:
        yield server


def test_interactive_tunnel_over_the_rest_api(worker_factory, owner, pw_sshd, target_server, settings):
    worker = worker_factory(extra_env={"TUNNELSITE_PROMPT_TIMEOUT": "60"})
    client = client_for(owner)
    port = pool_port()
    created = client.post(
        "/api/v1/tunnels/",
        {
            "name": "api-login",
            "remote_host": pw_sshd.destination,
            "ssh_port": pw_sshd.port,
            "local_port": str(port),
            "remote_port": f"127.0.0.1:{target_server.port}",
            "interactive": True,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["desired_state"] == "stopped"  # interactive: created stopped
    url = f"/api/v1/tunnels/{created.json()['id']}/"

    # The wait ends as soon as ssh asks, long before the 20 s asked for, and says where to answer.
    began = time.monotonic()
    started = client.post(f"{url}start/?wait=20")
    waited = time.monotonic() - began
    assert started.status_code == 200, started.content
    output = started.json()["output"]
    assert output.startswith("needs answer: ") and "password" in output.lower(), output
    assert f"{url}prompt/" in output
    assert waited < 15, waited
    assert started.json()["prompt_pending"] is True

    prompt = client.get(f"{url}prompt/").json()
    assert prompt["pending"] is True and prompt["echo"] is False and "password" in prompt["prompt"].lower()
    assert 0 < prompt["seconds_left"] <= 60
    listed = client.get("/api/v1/tunnels/", {"name": "api-login"}).json()["entries"]
    assert [item["prompt_pending"] for item in listed] == [True]

    answered = client.post(f"{url}prompt/", {"answer": pw_sshd.password}, format="json")
    assert answered.status_code == 202 and answered.json() == {"accepted": True}
    wait_for(lambda: client.get(url).json()["status"] == "running", timeout=20, message="running after login")
    assert client.get(url).json()["prompt_pending"] is False
    assert wait_fetch(port, target_server.greeting)
    assert client.post(f"{url}prompt/", {"answer": "again"}, format="json").status_code == 409

    # The password is nowhere in plain form: tables, database files, data dir, processes, ps.
    assert find_secret(pw_sshd.password, data_dir=settings.DATA_DIR, worker_pid=worker.proc.pid) == []

    # The master dies: needs_auth everywhere, and nothing brings it back by itself.
    tunnel = Tunnel.objects.get(name="api-login")
    os.kill(tunnel.pid, signal.SIGKILL)
    wait_for(lambda: client.get(url).json()["status"] == "needs_auth", timeout=15, message="needs_auth")
    body = client.get(url).json()
    assert body["desired_state"] == "stopped" and "log in" in body["last_error"]
    compat = {item["hash"]: item["status"] for item in client.get("/status").json()}
    assert compat[tunnel.hash] == "DEAD"
    call = client.get(f"/api/v1/calls/client_status?tunnel={tunnel.hash}").json()
    assert (call["message"], call["error_code"], call["success"]) == ("offline", 24, True)
    refused = client.post(f"/start/{tunnel.hash}")
    assert refused.status_code == 409 and f"{url}prompt/" in refused.json()["error"]

    # A script's start carries the answer: no prompt, running again with a new master.
    again = client.post(f"{url}start/?wait=20", {"responses": [pw_sshd.password]}, format="json")
    assert again.status_code == 200
    assert again.json()["output"].startswith("started, pid "), again.json()["output"]
    assert again.json()["pid"] != tunnel.pid
    assert wait_fetch(port, target_server.greeting)
    assert find_secret(pw_sshd.password, data_dir=settings.DATA_DIR, worker_pid=worker.proc.pid) == []


def test_wrong_answer_over_the_api_ends_the_wait_as_failed(worker_factory, owner, pw_sshd, target_server):
    worker_factory(extra_env={"TUNNELSITE_PROMPT_TIMEOUT": "60"})
    client = client_for(owner)
    created = client.post(
        "/api/v1/tunnels/",
        {
            "name": "api-wrong",
            "remote_host": pw_sshd.destination,
            "ssh_port": pw_sshd.port,
            "local_port": str(pool_port()),
            "remote_port": f"127.0.0.1:{target_server.port}",
            "interactive": True,
        },
        format="json",
    )
    url = f"/api/v1/tunnels/{created.json()['id']}/"
    # The answer given up front is wrong: the start's wait ends with the failure and its reason.
    started = client.post(f"{url}start/?wait=20", {"responses": [pw_sshd.password + "-nope"]}, format="json")
    assert started.status_code == 200
    assert started.json()["output"].startswith("failed: ") and "permission denied" in started.json()["output"]
    body = client.get(url).json()
    assert (body["status"], body["desired_state"], body["prompt_pending"]) == ("failed", "stopped", False)
