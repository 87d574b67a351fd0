"""Issue 11: a port clash is tried a bounded number of times, then the tunnel stays failed.

Against a real sshd and a real listener that holds the port: neither the worker
nor autossh keeps retrying behind it, the listener keeps its port, and only a
start request or a new configuration tries again.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

from tests.procs import pool_port, wait_for
from tests.worker_fixtures import sshd_tunnel_data, wait_status
from tunnels import processes, retries, services, ssh
from tunnels.models import Tunnel

pytestmark = pytest.mark.timeout(120)

TRIES = 3  # settings.PORT_CLASH_TRIES default


@pytest.fixture
def holder():
    """A plain listener on a free loopback port (the program that owns the port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", pool_port()))  # inside the pool: an ordinary user may ask for it
    sock.listen(8)
    sock.settimeout(5)
    yield sock
    sock.close()


def create(key, sshd, port: int) -> Tunnel:
    data = sshd_tunnel_data(sshd, local_port=str(port))
    return services.create_tunnel(key.owner, {**data, "ssh_key": str(key.pk)})


def attempts(tunnel: Tunnel) -> int:
    """How many times ssh tried to bind (the worker's starts plus any autossh restarts)."""
    return tunnel.log_path.read_text().count("Address already in use")


def wait_held(tunnel: Tunnel) -> Tunnel:
    def held():
        tunnel.refresh_from_db()
        return tunnel.status == "failed" and "gave up after" in tunnel.last_error

    wait_for(held, timeout=30, message=f"a held tunnel (last: {tunnel.status} {tunnel.last_error})")
    return tunnel


def holder_still_answers(holder: socket.socket) -> bool:
    port = holder.getsockname()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        conn, _ = holder.accept()
        conn.close()
    return True


def no_process(tunnel: Tunnel) -> bool:
    return str(tunnel.uuid) not in processes.Scanner().scan()


def test_a_port_clash_fails_the_tunnel_after_bounded_tries(worker, sshd, owner_key, holder):
    tunnel = wait_held(create(owner_key, sshd, holder.getsockname()[1]))

    assert tunnel.last_error.startswith("address already in use")
    assert "ssh said:" in tunnel.last_error and str(holder.getsockname()[1]) in tunnel.last_error
    # Usually exactly TRIES clashes; on a loaded machine sshd may also drop one connection
    # (MaxStartups), which counts as a failure of its own without a bind attempt.
    failures = tunnel.consecutive_failures
    assert failures >= TRIES and tunnel.backoff_until is None
    assert f"gave up after {failures} tries" in tunnel.last_error
    assert wait_for(lambda: no_process(tunnel), message="no tunnel process left")
    tried = attempts(tunnel)
    assert 1 <= tried <= failures  # one bind per worker start: autossh did not restart ssh on its own
    time.sleep(3)  # longer than the test worker's longest back-off (2 s): nothing is retried
    assert attempts(tunnel) == tried and no_process(tunnel)
    tunnel.refresh_from_db()
    assert tunnel.status == "failed" and tunnel.desired_state == "running"
    assert holder_still_answers(holder)


def test_an_explicit_start_tries_a_held_tunnel_again(worker, sshd, owner_key, holder):
    port = holder.getsockname()[1]
    tunnel = wait_held(create(owner_key, sshd, port))
    holder.close()  # the port's owner went away

    services.request_start(tunnel)

    wait_status(tunnel, "running", timeout=20)
    assert tunnel.last_error == "" and tunnel.consecutive_failures == 0


def test_a_configuration_change_tries_again_with_a_fresh_count(worker, sshd, owner_key, holder):
    tunnel = wait_held(create(owner_key, sshd, holder.getsockname()[1]))

    before = attempts(tunnel)
    generation = tunnel.generation

    services.update_tunnel(tunnel, {"name": f"{tunnel.name}-renamed"}, partial=True)

    def held_again() -> bool:
        tunnel.refresh_from_db()
        return tunnel.running_generation == generation + 1 and retries.held(tunnel)

    wait_for(held_again, timeout=30, message="held again after a fresh count")
    assert tunnel.consecutive_failures >= TRIES
    assert 1 <= attempts(tunnel) - before <= tunnel.consecutive_failures
    assert holder_still_answers(holder)


def test_autossh_itself_does_not_retry_a_clash(transactional_db, staff, sshd, holder, settings):
    """The tunnel's own autossh command, without a worker: one ssh attempt, then autossh exits."""
    settings.SSH_IDENTITY = str(sshd.client_key)
    tunnel = services.create_tunnel(staff, sshd_tunnel_data(sshd, local_port=str(holder.getsockname()[1])), start=False)
    command = ssh.command_for(tunnel)
    log = settings.DATA_DIR / "autossh.log"

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command.argv,
            env=command.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=30)
        finally:
            processes.stop_group(proc.pid, [(proc.pid, None)], proc)

    assert code != 0
    assert log.read_text().count("Address already in use") == 1
    assert holder_still_answers(holder)


@pytest.mark.parametrize(
    "status,backoff,failures,generation,running,held",
    [
        ("failed", None, TRIES, 4, 4, True),  # gave up on a clash
        ("failed", "soon", TRIES, 4, 4, False),  # a retry is scheduled: an ordinary failure
        ("failed", None, 0, 4, 4, False),  # started again: the count was reset
        ("failed", None, TRIES, 5, 4, False),  # a new configuration
        ("backoff", None, TRIES, 4, 4, False),
        ("running", None, TRIES, 4, 4, False),
    ],
)
def test_when_a_tunnel_is_held(settings, status, backoff, failures, generation, running, held):
    settings.PORT_CLASH_TRIES = TRIES
    state = SimpleNamespace(
        status=status,
        backoff_until=backoff,
        consecutive_failures=failures,
        generation=generation,
        running_generation=running,
    )
    assert retries.held(state) is held


def test_only_a_clash_gives_up(settings):
    settings.PORT_CLASH_TRIES = TRIES
    assert retries.gives_up("address already in use: another program listens on 127.0.0.1:1", TRIES)
    assert not retries.gives_up("address already in use: another program listens on 127.0.0.1:1", TRIES - 1)
    assert not retries.gives_up("connection refused: nothing accepts SSH connections at x", 50)
