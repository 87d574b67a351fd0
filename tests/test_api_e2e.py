"""End to end through the REST API v1: a real worker, autossh and sshd on loopback.

create via the API → the worker starts it → ``status`` running; ``sessions`` and
``history`` show it; ``calls/disconnect`` → error_code 0 and the port closes;
``calls/client_status`` → offline.
"""

from __future__ import annotations

import pytest

from tests.procs import pool_port, port_open, wait_for
from tests.worker_fixtures import sshd_tunnel_data

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_api_drives_a_real_tunnel(sshd, worker, owner_client, owner_key):
    # owner_key: the owner's only key, which a new tunnel gets by default.
    data = sshd_tunnel_data(sshd, local_port=str(pool_port()))
    assert data.get("ssh_port"), "the test sshd listens on a non-default port"
    local_port = int(data["local_port"].rpartition(":")[2])

    created = owner_client.post("/api/v1/tunnels/", data, format="json")
    assert created.status_code == 201, created.json()
    tunnel_id, tunnel_hash = created.json()["id"], created.json()["hash"]

    def status() -> str:
        return owner_client.get(f"/api/v1/tunnels/{tunnel_id}/").json()["status"]

    wait_for(lambda: status() == "running", timeout=20, message="tunnel running")
    wait_for(lambda: port_open(local_port), timeout=10, message="local port open")
    item = owner_client.get(f"/api/v1/tunnels/{tunnel_id}/").json()
    assert item["pid"] and item["connected_since"] and item["node"]

    sessions = owner_client.get(f"/api/v1/tunnels/{tunnel_id}/sessions/").json()
    assert sessions["total"] >= 1 and sessions["entries"][0]["unregistered_at"] is None
    history = owner_client.get("/api/v1/history/", {"tunnel": tunnel_id}).json()
    assert history["total"] >= 1 and history["entries"][0]["tunnel_id"] == tunnel_id

    disconnected = owner_client.get(f"/api/v1/calls/disconnect?tunnel={tunnel_hash[:12]}&wait=10")
    assert disconnected.json() == {"message": "OK", "error_code": 0, "success": True}
    wait_for(lambda: not port_open(local_port), timeout=10, message="local port closed")

    offline = owner_client.get(f"/api/v1/calls/client_status?tunnel={tunnel_id}")
    assert offline.json() == {"message": "offline", "error_code": 24, "success": True}
    ended = owner_client.get(f"/api/v1/tunnels/{tunnel_id}/sessions/").json()["entries"][0]
    assert ended["unregistered_at"] is not None
