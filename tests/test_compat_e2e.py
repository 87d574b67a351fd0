"""End-to-end through the compat API: a real worker runs a real autossh tunnel through the test sshd."""

from __future__ import annotations

import pytest

from tests.conftest import client_for
from tests.procs import port_open, wait_for
from tests.worker_fixtures import sshd_tunnel_data, wait_fetch
from tunnels.models import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def compat_status(client, tunnel_hash: str) -> str:
    return next(item["status"] for item in client.get("/status").json() if item["hash"] == tunnel_hash)


def test_config_new_runs_stop_closes_and_logs_show_it(worker, sshd, owner, owner_key, target_server):
    client = client_for(owner)  # owner_key: the owner's only key, which a new tunnel gets by default
    body = sshd_tunnel_data(sshd, remote_port=str(target_server.port))
    created = client.post("/api/autossh/config/new", body, format="json")
    assert created.status_code == 201, created.content
    tunnel_hash = created.json()["hash"]
    local_port = int(body["local_port"])

    # Auto-apply: nobody calls /start; the worker brings the new tunnel up.
    wait_for(lambda: compat_status(client, tunnel_hash) == "RUNNING", timeout=20, message="RUNNING in /status")
    assert wait_fetch(local_port, target_server.greeting)
    tunnel = Tunnel.objects.get(hash=tunnel_hash)

    stopped = client.post(f"/stop/{tunnel_hash[:8]}?wait=10")
    assert stopped.status_code == 200
    assert stopped.json()["output"] == f"Stopping tunnel: {tunnel.name} ({tunnel_hash})\nstopped"
    assert compat_status(client, tunnel_hash) == "STOPPED"
    wait_for(lambda: not port_open(local_port), timeout=5, message="port closed")

    logs = client.get("/logs").json()
    assert [entry["filename"] for entry in logs] == [f"tunnel-{tunnel_hash}.log"]
    log = client.get(f"/logs/{tunnel_hash[:8]}")
    assert log.status_code == 200 and log.json()["tunnel_hash"] == tunnel_hash
    assert log.json()["log"].strip(), "the tunnel's log is empty"

    # A stop is remembered; /start brings it back and reports the new process.
    started = client.post(f"/start/{tunnel_hash[:8]}?wait=15")
    assert started.status_code == 200
    tunnel.refresh_from_db()
    assert started.json()["output"].endswith(f"\nstarted, pid {tunnel.pid}")
    assert wait_fetch(local_port, target_server.greeting)
