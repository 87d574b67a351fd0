"""Issue 11: an -R forward the SSH server could bind on only one loopback family is not
reported as listening on ``127.0.0.1``.

ssh asks the server to listen on ``localhost:P`` (no bind address given); with
``127.0.0.1:P`` taken there, this sshd binds ``[::1]:P`` alone and still
answers success, and ssh is told nothing more ("remote forward success for:
listen P"). tunnelsite therefore reports what it asked for.
"""

from __future__ import annotations

import socket

import pytest

from tests.procs import free_port, wait_for
from tests.worker_fixtures import fetch, sshd_tunnel_data, wait_status
from tunnels import services
from tunnels.models import TunnelSession

pytestmark = pytest.mark.timeout(120)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def taken_ipv4_port():
    """A port whose 127.0.0.1 side something else holds on the SSH server (the same host here)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_a_remote_forward_bound_only_on_ipv6_is_not_reported_as_127_0_0_1(
    worker, sshd, owner_key, owner_client, target_server, taken_ipv4_port
):
    port = taken_ipv4_port
    data = sshd_tunnel_data(
        sshd, direction="local_to_remote", local_port=str(target_server.port), remote_port=str(port)
    )
    tunnel = services.create_tunnel(owner_key.owner, {**data, "ssh_key": str(owner_key.pk)})

    wait_status(tunnel, "running", timeout=20)

    # The forward lives on [::1] only; 127.0.0.1:P stays the other program's.
    wait_for(lambda: target_server.greeting in fetch(port, host="::1", timeout=1.0), message="traffic via [::1]")
    assert target_server.greeting not in fetch(port, timeout=1.0)
    body = owner_client.get(f"/api/v1/tunnels/{tunnel.uuid}/").json()
    assert body["listen"] == f"localhost:{port}" != f"127.0.0.1:{port}"
    assert TunnelSession.objects.get(tunnel=tunnel, ended_at=None).listen == f"localhost:{port}"
