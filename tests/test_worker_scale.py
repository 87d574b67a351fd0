"""The worker with many tunnels, CI-sized: real worker processes running the stand-in tunnel program.

The stand-in (bench/standin/autossh.c, selected with TUNNELSITE_AUTOSSH) looks to the worker exactly
like autossh running ssh, without an sshd per tunnel: these tests check correctness at a size no
loopback sshd serves quickly (every tunnel running, no false failures, recovery, stop-all, failover
without running anything twice). Timings are bench/scale.py's business; bounds here are generous.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from bench.standin import build as standin
from tests.procs import pool_port, port_open, wait_for
from tests.worker_fixtures import sshd_tunnel_data
from tunnels import processes, services
from tunnels.models import ExitReason, Status, Tunnel, TunnelSession

# Each runs in ~5-15 s alone; the bounds are for a machine shared with other suites.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MANY = 150
# Outside the default pool (20000-29999) where other tests pick ports, below the ephemeral range:
# a port another test binds in the seconds before a start would be a real clash, not a false failure.
QUIET_PORTS = (30000, 32767)
BAD_EXITS = (ExitReason.FAILED, ExitReason.CRASHED, ExitReason.GONE)


@pytest.fixture(scope="module")
def standin_bin(tmp_path_factory):
    reason = standin.available()
    if reason:
        pytest.skip(reason)
    return str(standin.build(tmp_path_factory.mktemp("standin")))


def standin_worker(worker_factory, standin_bin, node: str | None = None):
    return worker_factory(node=node, extra_env={"TUNNELSITE_AUTOSSH": standin_bin})


def stopped_tunnels(owner, sshd, count: int) -> list[Tunnel]:
    """``count`` -L tunnels of ``owner``, created in one replace-all and stopped before any worker runs."""
    items = [sshd_tunnel_data(sshd, name=f"many-{i}", local_port=str(pool_port(*QUIET_PORTS))) for i in range(count)]
    services.replace_all(owner, items)
    services.stop_all(Tunnel.objects.filter(owner=owner))
    return list(Tunnel.objects.filter(owner=owner).order_by("pk"))


def all_running(owner, count: int) -> bool:
    return Tunnel.objects.filter(owner=owner, status=Status.RUNNING).count() == count


def live_groups() -> dict[str, list[processes.Found]]:
    """Tunnel process groups of this test's data dir (orphaned ssh left out), by tunnel uuid."""
    return {
        uuid: [item for item in items if not item.orphan]
        for uuid, items in processes.Scanner().scan().items()
        if any(not item.orphan for item in items)
    }


# --- the stand-in itself ------------------------------------------------------------


def test_standin_looks_like_autossh_running_ssh(standin_bin, tmp_path):
    port = pool_port()
    env = {**os.environ, "TUNNELSITE_TUNNEL": "marker-123"}
    argv = [standin_bin, "-M", "0", "-N", "-o", "ExitOnForwardFailure=yes", "-p", "2222"]
    proc = subprocess.Popen(
        [*argv, "-L", f"127.0.0.1:{port}:localhost:80", "--", "u@127.0.0.1"],
        env=env, stderr=open(tmp_path / "err", "wb"), start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), timeout=5, message="the stand-in's forward")
        parent = psutil.Process(proc.pid)
        (child,) = parent.children()
        assert (parent.name(), child.name()) == ("autossh", "ssh")
        assert child.environ()["TUNNELSITE_TUNNEL"] == "marker-123"
        assert processes.listening_on(child.pid, port)
        assert "Authenticated to 127.0.0.1 ([127.0.0.1]:2222)" in (tmp_path / "err").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) != 0
        wait_for(lambda: not port_open(port), timeout=5, message="the forward closed")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_standin_fails_like_ssh_on_a_port_in_use(standin_bin):
    port = pool_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run(
            [standin_bin, "-N", "-L", f"127.0.0.1:{port}:localhost:80", "--", "u@h"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    assert done.returncode == 255
    assert f"cannot listen to port: {port}" in done.stderr


def test_standin_remote_forward_authenticates_and_its_parent_follows_the_child(standin_bin, tmp_path):
    proc = subprocess.Popen(
        [standin_bin, "-N", "-R", "localhost:9:127.0.0.1:80", "--", "u@example"],
        stderr=open(tmp_path / "err", "wb"), start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    try:
        wait_for(lambda: "Authenticated to example" in (tmp_path / "err").read_text(), timeout=5, message="auth line")
        (child,) = psutil.Process(proc.pid).children()
        child.kill()
        assert proc.wait(timeout=5) == 128 + signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- many tunnels on one worker -------------------------------------------------------


def test_start_all_of_many_runs_every_one_without_false_failures(worker_factory, standin_bin, staff, sshd):
    tunnels = stopped_tunnels(staff, sshd, MANY)
    worker = standin_worker(worker_factory, standin_bin)

    services.start_all(Tunnel.objects.filter(owner=staff))

    wait_for(lambda: all_running(staff, MANY), timeout=180, interval=0.2, message=f"{MANY} tunnels running")
    assert all(port_open(int(t.local_port)) for t in tunnels)
    groups = live_groups()
    assert sorted(groups) == sorted(str(t.uuid) for t in tunnels)
    assert all(len(found) == 1 and found[0].node == worker.node for found in groups.values())
    assert not TunnelSession.objects.filter(owner=staff, exit_reason__in=BAD_EXITS).exists()
    assert not Tunnel.objects.filter(owner=staff, restart_count__gt=0).exists()


def test_kill_9_of_one_among_many_recovers_and_stop_all_stops_every_one(worker_factory, standin_bin, staff, sshd):
    tunnels = stopped_tunnels(staff, sshd, MANY)
    standin_worker(worker_factory, standin_bin)
    services.start_all(Tunnel.objects.filter(owner=staff))
    wait_for(lambda: all_running(staff, MANY), timeout=180, interval=0.2, message=f"{MANY} tunnels running")
    victim = Tunnel.objects.get(pk=tunnels[MANY // 2].pk)

    os.kill(victim.pid, signal.SIGKILL)

    def replaced() -> bool:
        row = Tunnel.objects.get(pk=victim.pk)
        return row.status == Status.RUNNING and row.pid != victim.pid and port_open(int(row.local_port))

    wait_for(replaced, timeout=60, interval=0.1, message="the killed tunnel running again")
    assert all_running(staff, MANY)
    assert Tunnel.objects.filter(owner=staff, restart_count__gt=0).count() == 1  # the killed one only

    services.stop_all(Tunnel.objects.filter(owner=staff))

    wait_for(lambda: not live_groups(), timeout=180, interval=0.2, message="every tunnel process gone")
    wait_for(
        lambda: not Tunnel.objects.filter(owner=staff).exclude(status=Status.STOPPED).exists(),
        timeout=60,
        message="every tunnel stopped",
    )
    assert not any(port_open(int(t.local_port)) for t in tunnels)


# --- failover between two nodes (PostgreSQL) -------------------------------------------


def kill_node(worker) -> None:
    """A lost machine: SIGKILL the worker and every process of the tunnels it ran."""
    worker.kill()
    for found in live_groups().values():
        for item in found:
            if item.node == worker.node:
                os.killpg(item.pgid, signal.SIGKILL)


def test_failover_runs_every_tunnel_on_the_survivor_and_none_twice(worker_factory, standin_bin, staff, sshd, settings):
    if connection.vendor != "postgresql":
        pytest.skip("failover between nodes is checked on PostgreSQL (DATABASE_URL=postgres://...)")
    count = 20
    tunnels = stopped_tunnels(staff, sshd, count)
    first = standin_worker(worker_factory, standin_bin)
    second = standin_worker(worker_factory, standin_bin)
    services.start_all(Tunnel.objects.filter(owner=staff))
    wait_for(lambda: all_running(staff, count), timeout=180, interval=0.2, message="all running")
    nodes = dict.fromkeys((first.node, second.node), 0)
    for node in Tunnel.objects.filter(owner=staff).values_list("node", flat=True):
        nodes[node] += 1
    victim, survivor = (first, second) if nodes[first.node] >= nodes[second.node] else (second, first)
    lease = int(victim.env["TUNNELSITE_WORKER_LEASE"])

    killed_at = timezone.now()
    kill_node(victim)
    doubles: list[str] = []

    def all_on_survivor() -> bool:
        doubles.extend(uuid for uuid, found in live_groups().items() if len(found) > 1)
        rows = Tunnel.objects.filter(owner=staff).values_list("status", "node")
        return all(row == (Status.RUNNING, survivor.node) for row in rows)

    wait_for(all_on_survivor, timeout=lease + 30, interval=0.1, message="every tunnel running on the survivor")
    assert doubles == []
    assert all(port_open(int(t.local_port)) for t in tunnels)
    groups = live_groups()
    assert len(groups) == count and all(found[0].node == survivor.node for found in groups.values())
    # The survivor started each moved tunnel only after the victim was gone: no time when both ran it.
    moved = TunnelSession.objects.filter(owner=staff, node=survivor.node, started_at__gte=killed_at)
    assert moved.count() == nodes[victim.node]
    assert not TunnelSession.objects.filter(owner=staff, exit_reason__in=(ExitReason.FAILED,)).exists()
    survivor_open = TunnelSession.objects.filter(owner=staff, node=survivor.node, ended_at=None)
    assert survivor_open.values("tunnel_uuid").distinct().count() == survivor_open.count() == count
