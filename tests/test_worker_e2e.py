"""End-to-end: the real worker runs real autossh tunnels through a real sshd."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import psutil
import pytest

from tests.procs import free_port, pool_port, port_open, wait_for
from tests.worker_fixtures import fetch, make_key, sshd_tunnel_data, wait_fetch, wait_gone, wait_status
from tunnels import services
from tunnels.models import Desired, ExitReason, Tunnel, TunnelSession

pytestmark = pytest.mark.timeout(120)


def ssh_children(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children() if p.name() == "ssh"]
    except psutil.NoSuchProcess:
        return []


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def group_pids(tunnel: Tunnel) -> list[int]:
    return [tunnel.pid, *ssh_children(tunnel.pid)]


def create(key, data: dict) -> Tunnel:
    """A tunnel of ``key.owner`` that authenticates with ``key``."""
    return services.create_tunnel(key.owner, {**data, "ssh_key": str(key.pk)})


def start_running(key, sshd, target_server, **overrides) -> Tunnel:
    data = sshd_tunnel_data(sshd, remote_port=str(target_server.port), **overrides)
    return wait_status(create(key, data), "running")


def test_local_forward_carries_traffic_to_target(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)

    assert tunnel.running_generation == tunnel.generation
    assert tunnel.node == worker.node
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    session = TunnelSession.objects.get(tunnel=tunnel)
    assert (session.pid, session.ended_at, session.node) == (tunnel.pid, None, worker.node)
    assert session.listen == f"127.0.0.1:{tunnel.local_port}"
    assert tunnel.log_path.exists()


def test_remote_forward_carries_traffic_from_the_server_side(worker, sshd, owner_key, target_server):
    remote_port = free_port()
    data = sshd_tunnel_data(
        sshd, direction="local_to_remote", local_port=str(target_server.port), remote_port=str(remote_port)
    )
    tunnel = wait_status(create(owner_key, data), "running")

    assert wait_fetch(remote_port, target_server.greeting)
    assert "Authenticated to" in tunnel.log_path.read_text()


def test_killed_ssh_child_is_brought_back_by_autossh(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)
    (child,) = wait_for(lambda: ssh_children(tunnel.pid), message="ssh child")

    os.kill(child, signal.SIGKILL)

    new = wait_for(lambda: [c for c in ssh_children(tunnel.pid) if c != child], message="a new ssh child")
    assert new and psutil.Process(tunnel.pid).is_running()
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    # The drop may have been seen ("starting", "reconnecting: …") just before the new ssh was: same process.
    wait_status(tunnel, "running", timeout=10)
    assert (tunnel.restart_count, psutil.Process(tunnel.pid).is_running()) == (0, True)


def test_killed_autossh_is_restarted_and_recorded_as_a_crash(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)
    old_pid = tunnel.pid

    os.kill(old_pid, signal.SIGKILL)

    wait_for(
        lambda: Tunnel.objects.filter(pk=tunnel.pk, status="running").exclude(pid=old_pid).exists(),
        timeout=10,
        message="restarted tunnel",
    )
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    tunnel.refresh_from_db()
    assert tunnel.restart_count == 1
    crashed = TunnelSession.objects.get(tunnel=tunnel, pid=old_pid)
    assert crashed.exit_reason == ExitReason.CRASHED and crashed.ended_at is not None
    assert TunnelSession.objects.get(tunnel=tunnel, ended_at=None).pid == tunnel.pid


def test_restarted_worker_adopts_running_tunnel_without_a_new_session(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)
    pid = tunnel.pid

    worker.kill()
    assert psutil.Process(pid).is_running()
    worker.start()
    wait_for(lambda: "adopted tunnel" in worker.log_text(), message="adoption logged")

    tunnel.refresh_from_db()
    assert (tunnel.pid, tunnel.status) == (pid, "running")
    assert TunnelSession.objects.filter(tunnel=tunnel).count() == 1
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)


def test_stop_closes_port_and_leaves_no_processes_or_zombies(worker, sshd, owner, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)
    pids = group_pids(tunnel)

    services.request_stop(tunnel, services.Actor(owner))
    wait_status(tunnel, "stopped")

    wait_gone(pids)
    assert not port_open(int(tunnel.local_port))
    worker_children = psutil.Process(worker.proc.pid).children(recursive=True)
    assert [p.pid for p in worker_children if p.status() == psutil.STATUS_ZOMBIE] == []
    session = TunnelSession.objects.get(tunnel=tunnel)
    assert session.exit_reason == ExitReason.STOPPED_BY_USER
    assert session.ended_by == owner
    assert tunnel.log_path.exists()  # logs survive a stop


def test_deleting_a_running_tunnel_stops_it(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server)
    pids = group_pids(tunnel)
    uuid = tunnel.uuid

    services.delete_tunnel(tunnel)

    wait_gone(pids)
    assert not port_open(int(tunnel.local_port))
    wait_for(
        lambda: TunnelSession.objects.filter(tunnel_uuid=uuid, exit_reason=ExitReason.DELETED).exists(),
        message="session closed as deleted",
    )


def test_config_change_restarts_with_the_new_forward(worker, sshd, owner_key, target_server):
    from tests.worker_fixtures import start_target

    tunnel = start_running(owner_key, sshd, target_server)
    old_pid = tunnel.pid
    second = start_target()
    try:
        services.update_tunnel(tunnel, {"remote_port": str(second.port)}, partial=True)
        wait_for(
            lambda: Tunnel.objects.filter(pk=tunnel.pk, status="running", running_generation=2).exists(),
            message="restart with generation 2",
        )
        assert wait_fetch(int(tunnel.local_port), second.greeting)
        assert TunnelSession.objects.get(tunnel=tunnel, pid=old_pid).exit_reason == ExitReason.CONFIG_CHANGED
        assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    finally:
        second.shutdown()
        second.server_close()


def test_local_port_in_use_fails_with_a_clear_reason_while_others_run(worker, sshd, owner_key, target_server):
    busy = socket.socket()
    busy.bind(("127.0.0.1", pool_port()))  # a program outside tunnelsite holds a port of the pool
    busy.listen()
    try:
        port = busy.getsockname()[1]
        bad = create(owner_key, sshd_tunnel_data(sshd, local_port=str(port)))
        good = start_running(owner_key, sshd, target_server)
        wait_status(bad, "failed")
        assert "address already in use" in bad.last_error
        assert bad.consecutive_failures >= 1 and bad.backoff_until is not None
        assert services.wait_for_outcome(bad, True, 1).text.startswith("failed: address already in use")
        assert wait_fetch(int(good.local_port), target_server.greeting)
    finally:
        busy.close()


def test_unreachable_server_backs_off_with_the_reason(worker, sshd, owner_key, target_server):
    closed = free_port()
    bad = create(owner_key, sshd_tunnel_data(sshd, ssh_port=closed))
    good = start_running(owner_key, sshd, target_server)

    wait_status(bad, "backoff", "failed")
    assert "connection refused" in bad.last_error
    assert wait_fetch(int(good.local_port), target_server.greeting)
    wait_for(lambda: Tunnel.objects.get(pk=bad.pk).consecutive_failures >= 2, message="a retry")


def test_wrong_key_fails_with_permission_denied(worker, sshd, owner):
    stranger = make_key(owner, "not-on-the-server")  # never added to the server's authorized_keys

    bad = create(stranger, sshd_tunnel_data(sshd))

    wait_status(bad, "failed")
    assert "permission denied (publickey" in bad.last_error


def test_without_auto_restart_a_dead_tunnel_stays_stopped(worker, sshd, owner_key, target_server):
    tunnel = start_running(owner_key, sshd, target_server, auto_restart=False)
    (child,) = wait_for(lambda: ssh_children(tunnel.pid), message="ssh child")

    os.kill(child, signal.SIGKILL)

    wait_status(tunnel, "stopped")
    assert tunnel.desired_state == Desired.STOPPED
    assert "auto restart is off" in tunnel.last_error
    assert not port_open(int(tunnel.local_port))


def test_two_workers_run_each_tunnel_once_and_take_over_a_lost_node(worker_factory, sshd, owner_key, target_server):
    first = worker_factory()
    second = worker_factory()
    tunnels = [start_running(owner_key, sshd, target_server) for _ in range(4)]

    autossh = [p for p in psutil.process_iter(["name", "environ"]) if p.info["name"] == "autossh"]
    uuids = [p.info["environ"].get("TUNNELSITE_TUNNEL") for p in autossh if p.info["environ"]]
    for tunnel in tunnels:
        assert uuids.count(str(tunnel.uuid)) == 1
    by_node = {t.node for t in Tunnel.objects.all()}
    assert by_node <= {first.node, second.node}

    # Lose whichever node runs the first tunnel, with its tunnel processes.
    tunnels[0].refresh_from_db()
    lost = first if tunnels[0].node == first.node else second
    survivor = second if lost is first else first
    lost_tunnels = list(Tunnel.objects.filter(node=lost.node))
    lost.kill()
    for tunnel in lost_tunnels:
        os.killpg(tunnel.pid, signal.SIGKILL)
        reap(tunnel.pid)  # re-parented to this test process when its worker died

    for tunnel in lost_tunnels:
        wait_for(
            lambda t=tunnel: Tunnel.objects.filter(pk=t.pk, node=survivor.node, status="running").exists(),
            timeout=20,
            message="takeover by the surviving node",
        )
        assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    assert fetch(int(tunnels[1].local_port)) == target_server.greeting


def test_sigterm_leaves_tunnels_running_unless_stop_on_exit(worker_factory, sshd, owner_key, target_server):
    keeper = worker_factory()
    kept = start_running(owner_key, sshd, target_server)
    keeper.stop()
    assert psutil.Process(kept.pid).is_running() and port_open(int(kept.local_port))
    services.request_stop(kept)  # hand it to the next worker to stop

    stopper = worker_factory(args=["--stop-on-exit"])
    wait_status(kept, "stopped")
    tunnel = start_running(owner_key, sshd, target_server)
    pids = group_pids(tunnel)

    stopper.stop()

    wait_gone(pids)
    tunnel.refresh_from_db()
    assert tunnel.status == "stopped" and tunnel.desired_state == Desired.RUNNING  # the next worker starts it
    assert TunnelSession.objects.get(tunnel=tunnel).exit_reason == ExitReason.WORKER_EXIT
