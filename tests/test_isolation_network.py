"""Issue 11, end to end on the real network policy: what an ordinary user's tunnels may connect to.

Regression tests for the rows "exposed the host's own PostgreSQL via -R", "the web app's port and
another user's -L listener as -R target" and "scanned the host and its network", plus a name that
resolves to this host at connect time. A real sshd on loopback, the real worker and autossh; a
throw-away listener on loopback stands in for PostgreSQL and counts every connection it gets.
"""

from __future__ import annotations

import socket
import threading

import psutil
import pytest

from tests.procs import free_port, pool_port, wait_for
from tests.test_worker_e2e import create
from tests.worker_fixtures import fetch, sshd_tunnel_data, wait_fetch, wait_status
from tunnels import services
from tunnels.models import Status, Tunnel, TunnelSession
from tunnelsite import netrules

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180), pytest.mark.real_network_policy]
URL = "/api/v1/tunnels/"


class Listener:
    """A TCP listener on loopback that accepts, counts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def database():
    """Stands in for the host's PostgreSQL (trust auth on loopback)."""
    listener = Listener()
    yield listener
    listener.close()


def grant(user, **fields) -> None:
    for name, value in fields.items():
        setattr(user, name, value)
    user.save(update_fields=list(fields))


def reverse_to(sshd, target_port: int, **overrides) -> dict:
    """An -R tunnel: the server's side listens on a free port, this host's side connects to target_port."""
    return (
        sshd_tunnel_data(
            sshd, direction="local_to_remote", local_port=f"127.0.0.1:{target_port}", remote_port=str(free_port())
        )
        | overrides
    )


def withdrawn(user, tunnel: Tunnel, **fields) -> Tunnel:
    """A tunnel created under a grant, the grant then withdrawn (as a row that predates the policy)."""
    grant(user, **fields)
    services.bump_marker()
    return tunnel


def ssh_argv(tunnel: Tunnel) -> list[str]:
    """The command line of the tunnel's ssh (the autossh child)."""
    tunnel.refresh_from_db()
    children = psutil.Process(tunnel.pid).children()
    assert children, "autossh has no ssh child"
    return children[0].cmdline()


# --- "exposed the tunnelsite host's own PostgreSQL via -R" -------------------------------


def test_a_granted_loopback_target_is_reachable_through_the_server(worker, sshd, owner, owner_key, database):
    # The control: with the grant the forward works, so the refusals below are the policy's doing.
    grant(owner, ssh_destinations="127.0.0.0/8", allowed_targets=f"127.0.0.1:{database.port}")
    tunnel = wait_status(create(owner_key, reverse_to(sshd, database.port)), Status.RUNNING, timeout=20)
    remote = int(tunnel.remote_port)
    wait_for(lambda: fetch(remote, timeout=1.0) == "" and database.accepted > 0, timeout=10, message="forwarded")


def test_the_hosts_database_as_an_r_target_is_403(owner, owner_client, sshd, database):
    grant(owner, ssh_destinations="127.0.0.0/8")
    response = owner_client.post(URL, reverse_to(sshd, database.port), format="json")
    assert response.status_code == 403
    assert f"-R target 127.0.0.1:{database.port} is a loopback address" in response.json()["error"]
    assert not Tunnel.objects.exists()


def test_an_old_row_targeting_the_database_is_failed_by_the_worker(worker, sshd, owner, owner_key, database):
    grant(owner, ssh_destinations="127.0.0.0/8", allowed_targets=f"127.0.0.1:{database.port}")
    tunnel = create(owner_key, reverse_to(sshd, database.port))
    withdrawn(owner, tunnel, allowed_targets="")

    tunnel = wait_status(tunnel, Status.FAILED, timeout=20)
    assert f"-R target 127.0.0.1:{database.port} is a loopback address" in tunnel.last_error
    assert tunnel.pid is None
    remote = int(tunnel.remote_port)
    assert fetch(remote, timeout=1.0) == "" and database.accepted == 0


# --- "the web app's port and another user's -L listener as -R target" ------------------


def test_another_users_listener_and_the_web_app_are_not_r_targets(
    worker, sshd, owner, owner_key, owner_client, other, other_client, target_server
):
    from tests.worker_fixtures import make_key

    grant(other, ssh_destinations="127.0.0.0/8")
    grant(owner, ssh_destinations="127.0.0.0/8")
    other_key = make_key(other)
    sshd.authorize(other_key.public_key)
    try:
        private = create(other_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
        private = wait_status(private, Status.RUNNING, timeout=20)
        victim = int(private.local_port)
        for target in (f"127.0.0.1:{victim}", f"[::1]:{victim}", "127.0.0.1:8000", "127.0.0.1:8080"):
            response = owner_client.post(URL, reverse_to(sshd, 0, local_port=target), format="json")
            assert response.status_code == 403, (target, response.content)
            assert "loopback address" in response.json()["error"]
        assert not Tunnel.objects.filter(owner=owner).exists()
        assert wait_fetch(victim, target_server.greeting)
    finally:
        sshd.revoke(other_key.public_key)


# --- "scanned the host and its network" ---------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "0", "2130706433", "169.254.169.254", "0x7f.1", "localhost"])
def test_a_destination_on_this_host_is_403(owner_client, database, host):
    data = {"remote_host": f"me@{host}", "ssh_port": database.port, "remote_port": "80", "local_port": "25432"}
    response = owner_client.post(URL, data, format="json")
    assert response.status_code == 403
    assert "SSH destination" in response.json()["error"]
    assert database.accepted == 0


def run_test(client, tunnel: Tunnel) -> dict:
    response = client.post(f"{URL}{tunnel.uuid}/test/?wait=30")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_connection_test_never_touches_a_refused_destination(worker, sshd, owner, owner_key, owner_client, database):
    grant(owner, ssh_destinations="127.0.0.0/8")
    closed = free_port()
    data = {"remote_port": "80", "ssh_key": str(owner_key.pk), "remote_host": "me@127.0.0.1"}
    to_open = services.create_tunnel(
        owner, {**data, "name": "open", "local_port": str(pool_port()), "ssh_port": database.port}, start=False
    )
    to_closed = services.create_tunnel(
        owner, {**data, "name": "closed", "local_port": str(pool_port()), "ssh_port": closed}, start=False
    )
    withdrawn(owner, to_open, ssh_destinations="")

    open_body, closed_body = run_test(owner_client, to_open), run_test(owner_client, to_closed)

    for body in (open_body, closed_body):
        assert (body["ok"], body["step"], len(body["steps"])) == (False, "resolve", 1), body
        assert "is a loopback address" in body["detail"]
    # Nothing tells an open port from a closed one: the answers differ in the port number only.
    assert open_body["detail"].replace(str(database.port), "P") == closed_body["detail"].replace(str(closed), "P")
    assert database.accepted == 0


def test_a_user_with_a_destination_grant_reaches_the_real_sshd_at_the_checked_address(
    worker, sshd, owner, owner_key, target_server
):
    grant(owner, ssh_destinations=f"127.0.0.1:{sshd.port}")
    tunnel = wait_status(
        create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), Status.RUNNING, timeout=20
    )
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    argv = ssh_argv(tunnel)
    assert "HostName=127.0.0.1" in argv and f"HostKeyAlias=[127.0.0.1]:{sshd.port}" in argv
    assert argv[-1] == sshd.destination  # the name after "--" is the user's; the address is ours


# --- a name that resolves to this host at connect time ------------------------------------


def this_hosts_name() -> str:
    """This machine's own name, when it resolves only to addresses the policy denies by default."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 22, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    import ipaddress

    from tunnels.netpolicy import DEFAULT_DENIED_DESTINATIONS

    categories = {netrules.classify(ipaddress.ip_address(info[4][0].partition("%")[0])) for info in infos}
    if not categories <= DEFAULT_DENIED_DESTINATIONS or netrules.is_local_name(name):
        pytest.skip(f"{name} resolves to {categories}")
    return name


def test_a_name_that_resolves_to_this_host_is_failed_at_connect_time(worker, sshd, owner, owner_key, owner_client):
    name = this_hosts_name()
    data = sshd_tunnel_data(sshd, remote_host=f"{sshd.user}@{name}", ssh_key=str(owner_key.pk))
    response = owner_client.post(URL, data, format="json")
    assert response.status_code == 201, response.content  # a name: only the worker's resolution can tell

    tunnel = wait_status(Tunnel.objects.get(uuid=response.json()["id"]), Status.FAILED, timeout=20)
    assert f"{name} resolves to an address your tunnels may not reach" in tunnel.last_error
    assert "SSH destination 127.0.0.1" in tunnel.last_error or "own addresses" in tunnel.last_error
    assert not TunnelSession.objects.filter(tunnel=tunnel).exists()  # no ssh was ever started


def test_the_same_name_with_a_grant_is_pinned_and_keeps_its_host_key_under_the_name(
    worker, sshd, owner, owner_key, target_server
):
    name = this_hosts_name()
    grant(owner, ssh_destinations="127.0.0.0/8")
    data = sshd_tunnel_data(sshd, remote_host=f"{sshd.user}@{name}", remote_port=str(target_server.port))
    tunnel = wait_status(create(owner_key, data), Status.RUNNING, timeout=20)
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    argv = ssh_argv(tunnel)
    pinned = [arg for arg in argv if arg.startswith("HostName=")]
    assert pinned and netrules.classify(netrules.numeric_address(pinned[0].split("=", 1)[1])) is not None
    assert f"HostKeyAlias=[{name.lower()}]:{sshd.port}" in argv
