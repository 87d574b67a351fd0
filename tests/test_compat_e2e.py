"""End-to-end through the compat API: a real worker runs a real autossh tunnel through the test sshd."""

from __future__ import annotations

import time

import pytest

from tests.conftest import client_for
from tests.procs import port_open, wait_for
from tests.worker_fixtures import sshd_tunnel_data, wait_fetch
from tunnels.models import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
SIX_FIELDS = ("name", "remote_host", "remote_port", "local_port", "direction", "interactive")


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


def test_start_all_and_stop_all_wait_so_status_is_current_at_once(worker, sshd, owner, owner_key, target_server):
    """Issue 12: a client reading /status right after POST /start (all) sees the tunnels running."""
    from tunnels import services

    client = client_for(owner)
    tunnels = [
        services.create_tunnel(owner, sshd_tunnel_data(sshd, remote_port=str(target_server.port)), start=False)
        for _ in range(2)
    ]
    started = client.post("/start?wait=20")
    assert started.status_code == 200
    assert [compat_status(client, t.hash) for t in tunnels] == ["RUNNING", "RUNNING"]
    lines = started.json()["output"].splitlines()
    assert lines[0] == "Starting 2 tunnel(s)"
    for tunnel, line in zip(tunnels, lines[1:], strict=True):
        tunnel.refresh_from_db()
        assert line == f"{tunnel.name} ({tunnel.hash}): started, pid {tunnel.pid}"
        assert wait_fetch(int(tunnel.local_port), target_server.greeting)

    stopped = client.post("/api/autossh/stop?wait=10")
    assert stopped.status_code == 200
    assert [compat_status(client, t.hash) for t in tunnels] == ["STOPPED", "STOPPED"]
    assert stopped.json()["output"].splitlines()[1:] == [f"{t.name} ({t.hash}): stopped" for t in tunnels]
    for tunnel in tunnels:
        wait_for(lambda port=int(tunnel.local_port): not port_open(port), timeout=5, message="port closed")


def test_panel_save_with_the_six_fields_keeps_a_running_tunnel_on_its_ssh_port(
    worker, sshd, owner, owner_key, target_server
):
    """Issue 12: the original panel's "Save & Restart" (POST /config, six fields per entry) must not reset
    ``ssh_port`` (the test sshd is not on 22) and break the running tunnel."""
    client = client_for(owner)
    body = sshd_tunnel_data(sshd, remote_port=str(target_server.port))
    created = client.post("/config/new", body, format="json")
    assert created.status_code == 201, created.content
    tunnel = Tunnel.objects.get(hash=created.json()["hash"])
    wait_for(lambda: compat_status(client, tunnel.hash) == "RUNNING", timeout=20, message="RUNNING in /status")
    tunnel.refresh_from_db()
    pid, generation = tunnel.pid, tunnel.generation

    six = [{k: v for k, v in item.items() if k in SIX_FIELDS} for item in client.get("/config").json()["tunnels"]]
    assert client.post("/config", {"tunnels": six}, format="json").status_code == 200
    time.sleep(2)  # several worker passes: a reset ssh_port would have restarted it against port 22
    tunnel.refresh_from_db()
    assert (tunnel.ssh_port, tunnel.generation, tunnel.pid, tunnel.status) == (sshd.port, generation, pid, "running")
    assert compat_status(client, tunnel.hash) == "RUNNING"
    assert wait_fetch(int(body["local_port"]), target_server.greeting)
