"""End-to-end: host keys trusted per owner, with a real sshd, real autossh and the real worker.

A tunnel's first connection records the server's key (trust on first use); a
server that comes back with another key stops the tunnel, which stays down
until its owner accepts the new key through the API.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests import sshd as sshd_mod
from tests.conftest import client_for
from tests.procs import wait_for
from tests.worker_fixtures import make_key, sshd_tunnel_data, wait_fetch, wait_status
from tunnels import hostkeys, processes, services, sshkeys
from tunnels.models import HostKeyState, KnownHost, Status, Tunnel

pytestmark = pytest.mark.timeout(120)


def ssh_keygen_fingerprint(pub) -> str:
    """The fingerprint as ``ssh-keygen -lf`` prints it (second field)."""
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


@pytest.fixture
def own_sshd(owner_key, tmp_path):
    """An sshd of this test alone (it gets restarted with a new host key); accepts the owner's key."""
    with sshd_mod.running_sshd(tmp_path / "own-sshd") as server:
        server.authorize(owner_key.public_key)
        yield server


def create(key, data: dict) -> Tunnel:
    """A tunnel of ``key.owner`` that authenticates with ``key``."""
    return services.create_tunnel(key.owner, {**data, "ssh_key": str(key.pk)})


def wait_known_host(owner, server) -> KnownHost:
    def recorded():
        return KnownHost.objects.filter(owner=owner, host=server.host, port=server.port).first()

    return wait_for(recorded, timeout=10, message=f"a known host for {server.host}:{server.port}")


def wait_host_key_failure(tunnel: Tunnel, timeout: float = 30) -> Tunnel:
    def failed():
        tunnel.refresh_from_db()
        return tunnel.status == Status.FAILED and "host key changed" in tunnel.last_error

    wait_for(failed, timeout=timeout, message=f"host key failure (last: {tunnel.status} {tunnel.last_error})")
    return tunnel


def tunnel_processes(tunnel: Tunnel, data_dir) -> list:
    return processes.Scanner(data_dir).scan().get(str(tunnel.uuid), [])


def test_changed_host_key_stops_the_tunnel_until_its_owner_accepts_it(
    worker, own_sshd, owner, owner_key, target_server, data_dir
):
    tunnel = create(owner_key, sshd_tunnel_data(own_sshd, remote_port=str(target_server.port)))
    wait_status(tunnel, "running", timeout=20)
    wait_fetch(int(tunnel.local_port), target_server.greeting)
    row = wait_known_host(owner, own_sshd)
    old_fp = ssh_keygen_fingerprint(own_sshd.host_key_pub)
    assert (row.state, row.source, row.fingerprint) == (HostKeyState.TRUSTED, "tofu", old_fp)
    assert row.key == own_sshd.host_key_pub.read_text().split()[1]

    sshd_mod.restart_with_new_host_key(own_sshd)
    new_fp = ssh_keygen_fingerprint(own_sshd.host_key_pub)

    wait_host_key_failure(tunnel)
    row.refresh_from_db()
    assert (row.state, row.offered_fingerprint, row.fingerprint) == (HostKeyState.CHANGED, new_fp, old_fp)
    assert row.offered_key == own_sshd.host_key_pub.read_text().split()[1]
    assert tunnel.last_error == (
        f"host key changed for 127.0.0.1:{own_sshd.port}: the server now offers ssh-ed25519 {new_fp}, "
        f"trusted is {old_fp}; accept the new key in your known hosts "
        f"(POST /api/v1/known-hosts/{row.id}/accept/) or delete the entry"
    )

    # Stays down: several passes (back-off is at most 2 s here) start nothing.
    restarts = tunnel.restart_count
    time.sleep(4)
    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.pid, tunnel.restart_count) == (Status.FAILED, None, restarts)
    assert tunnel_processes(tunnel, data_dir) == []
    assert new_fp not in hostkeys.path_for(owner.pk).read_text()

    response = client_for(owner).post(f"/api/v1/known-hosts/{row.id}/accept/")
    assert response.status_code == 200

    wait_status(tunnel, "running", timeout=20)
    wait_fetch(int(tunnel.local_port), target_server.greeting)
    row.refresh_from_db()
    assert (row.state, row.fingerprint) == (HostKeyState.TRUSTED, new_fp)


def test_trust_is_per_owner(worker, sshd, owner, owner_key, other, target_server):
    other_key = make_key(other)
    sshd.authorize(other_key.public_key)
    try:
        mine = create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
        theirs = create(other_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
        wait_status(mine, "running", timeout=20)
        wait_status(theirs, "running", timeout=20)
    finally:
        sshd.revoke(other_key.public_key)

    fingerprint = ssh_keygen_fingerprint(sshd.host_key_pub)
    for user in (owner, other):
        row = wait_known_host(user, sshd)
        assert (row.source, row.fingerprint) == ("tofu", fingerprint)
        assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 {row.key}" in hostkeys.path_for(user.pk).read_text()
    assert hostkeys.path_for(owner.pk) != hostkeys.path_for(other.pk)


def test_a_pinned_wrong_key_fails_the_first_connection_as_changed(worker, sshd, owner, owner_key, target_server):
    wrong = hostkeys.Entry("127.0.0.1", sshd.port, *sshkeys.public_line(sshkeys.new_private_key()).split())
    client = client_for(owner)
    pinned = client.post("/api/v1/known-hosts/", {"line": hostkeys.format_entry(wrong)}, format="json")
    assert pinned.status_code == 201

    tunnel = create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
    wait_host_key_failure(tunnel)

    row = KnownHost.objects.get(owner=owner)
    server_fp = ssh_keygen_fingerprint(sshd.host_key_pub)
    assert (row.state, row.source, row.fingerprint) == (HostKeyState.CHANGED, "keyscan", wrong.fingerprint)
    assert row.offered_fingerprint == server_fp
    assert server_fp in tunnel.last_error and wrong.fingerprint in tunnel.last_error

    assert client.post(f"/api/v1/known-hosts/{row.id}/accept/").status_code == 200
    wait_status(tunnel, "running", timeout=20)
    wait_fetch(int(tunnel.local_port), target_server.greeting)
