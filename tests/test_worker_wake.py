"""The worker wakes on events (tunnels.worker.wake, tunnels.worker.exits), with a real worker and sshd.

Exit statuses are the real ones (a kill -9 reads as killed by SIGKILL), a change
made through the services reaches a worker whose marker poll is a minute away,
and orphans are reaped without taking other children's statuses.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from tests.procs import wait_for
from tests.worker_fixtures import sshd_tunnel_data, wait_fetch, wait_status
from tunnels import processes, services
from tunnels.models import ExitReason, Tunnel, TunnelSession
from tunnels.worker.exits import ExitWatch, describe_exit, raw_status

pytestmark = pytest.mark.timeout(120)

# Nothing but an event can wake this worker within the test: the marker is read once a minute,
# the resync is a minute away, and without notifications it would poll every 30 s.
SLOW_POLLS = {"TUNNELSITE_WORKER_FALLBACK_POLL": "60", "TUNNELSITE_WORKER_RESYNC": "60"}


def create(key, data: dict) -> Tunnel:
    return services.create_tunnel(key.owner, {**data, "ssh_key": str(key.pk)})


def test_kill_9_of_a_started_autossh_is_recorded_as_killed_by_sigkill(worker, sshd, owner_key, target_server):
    tunnel = wait_status(create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), "running")
    old_pid = tunnel.pid

    os.kill(old_pid, signal.SIGKILL)

    wait_for(
        lambda: Tunnel.objects.filter(pk=tunnel.pk, status="running").exclude(pid=old_pid).exists(),
        timeout=15,
        message="restarted tunnel",
    )
    crashed = TunnelSession.objects.get(tunnel=tunnel, pid=old_pid)
    assert crashed.exit_reason == ExitReason.CRASHED
    assert crashed.exit_detail == "killed by SIGKILL"
    assert f"pid {old_pid} exited: killed by SIGKILL" in worker.log_text()
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)


def test_a_change_wakes_the_worker_long_before_its_marker_poll(worker_factory, sshd, owner_key, target_server):
    worker = worker_factory(extra_env=SLOW_POLLS, args=["--interval", "30"])
    time.sleep(1.0)  # the worker's first (full) pass is over: only a wake-up can start the tunnel now

    began = time.monotonic()
    tunnel = create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port)))
    wait_status(tunnel, "running", timeout=10)

    assert time.monotonic() - began < 10  # the fallback poll is 60 s away, the interval 30 s
    assert wait_fetch(int(tunnel.local_port), target_server.greeting)
    services.request_stop(tunnel)
    wait_status(tunnel, "stopped", timeout=10)
    assert "worker pass failed" not in worker.log_text()


def test_exit_watch_reports_the_raw_status_and_leaves_popen_consistent(tmp_path):
    watch = ExitWatch()
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    watch.watch(proc.pid, proc)
    assert watch.collect() == {}

    os.kill(proc.pid, signal.SIGKILL)

    wait_for(lambda: watch.collect() or watch.exited, timeout=5, message="exit event")
    assert describe_exit(watch.exited[proc.pid]) == "killed by SIGKILL"
    assert proc.poll() == -signal.SIGKILL  # the Popen learnt it too, not "exit status 0"
    assert raw_status(proc.returncode) == watch.exited[proc.pid]
    watch.unwatch(proc.pid)
    assert watch.exited == {} and len(watch) == 0
    watch.close()


def test_exit_watch_without_pidfds_polls_and_is_still_right():
    watch = ExitWatch(use_pidfd=False)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    watch.watch(proc.pid, proc)
    assert watch.polling

    wait_for(lambda: watch.collect(), timeout=10, message="exit found by polling")
    assert describe_exit(watch.exited[proc.pid]) == "exit status 3"
    assert proc.returncode == 3
    watch.close()


def test_exit_watch_keeps_descriptors_for_the_rest_and_polls_beyond_its_room():
    watch = ExitWatch()
    watch.max_fds = 1  # as if the open-files limit less the reserve were one descriptor
    first = subprocess.Popen(["sleep", "30"], start_new_session=True)
    second = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    try:
        watch.watch(first.pid, first)
        watch.watch(second.pid, second)
        assert len(watch) == 2 and watch.polling  # one pidfd, one polled
        wait_for(lambda: watch.collect() or watch.exited, timeout=10, message="exit found by polling")
        assert describe_exit(watch.exited[second.pid]) == "exit status 3"
    finally:
        first.kill()
        first.wait()
        watch.close()


def test_orphans_are_reaped_but_not_the_children_someone_else_waits_for():
    processes.become_subreaper()
    try:
        # A shell in its own session starts a grandchild and is killed: the grandchild is re-parented here.
        shell = subprocess.Popen(
            ["sh", "-c", "sleep 0.3 & echo $!; exec sleep 30"], stdout=subprocess.PIPE, start_new_session=True
        )
        orphan = int(shell.stdout.readline())
        shell.stdout.close()
        own = subprocess.Popen(["true"])  # our own child, in our session: its Popen must get its status
        os.kill(shell.pid, signal.SIGKILL)
        shell.wait()
        own_session_child = subprocess.Popen(["sh", "-c", "exit 7"], start_new_session=True)
        time.sleep(0.8)  # the orphan and both children are zombies now

        reaped = processes.reap_orphans()

        assert describe_exit(reaped[orphan]) == "exit status 0"  # (earlier tests' orphans may be reaped too)
        assert own.pid not in reaped and own_session_child.pid not in reaped
        assert own.wait(timeout=5) == 0 and own_session_child.wait(timeout=5) == 7
    finally:
        processes.become_subreaper(False)


def test_a_lost_peer_s_tunnels_run_on_the_survivor_within_the_lease(worker_factory, sshd, owner_key, target_server):
    lease = 3
    env = {**SLOW_POLLS, "TUNNELSITE_WORKER_LEASE": str(lease)}  # no resync to lean on: only the lease timer
    lost = worker_factory(extra_env=env)
    tunnels = [
        wait_status(create(owner_key, sshd_tunnel_data(sshd, remote_port=str(target_server.port))), "running")
        for _ in range(3)
    ]
    assert {t.node for t in tunnels} == {lost.node}
    survivor = worker_factory(extra_env=env)
    time.sleep(1.0)  # the survivor has looked at its peer

    lost.kill()
    killed_at = time.monotonic()
    for tunnel in tunnels:
        os.killpg(tunnel.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(tunnel.pid, 0)  # re-parented to this test process when its worker died

    twice: list[str] = []

    def claimed() -> bool:
        for uuid, found in processes.Scanner().scan().items():
            if len([f for f in found if not f.orphan]) > 1:
                twice.append(uuid)
        return Tunnel.objects.filter(pk__in=[t.pk for t in tunnels], node=survivor.node).count() == len(tunnels)

    # The claim is the lease timer's doing (starting ssh under load is not): it must come right after expiry.
    wait_for(claimed, timeout=30, interval=0.1, message="every tunnel claimed by the survivor")
    took = time.monotonic() - killed_at
    assert took < lease + 3, f"claimed after {took:.1f}s with a {lease}s lease"
    wait_for(
        lambda: Tunnel.objects.filter(pk__in=[t.pk for t in tunnels], status="running").count() == len(tunnels),
        timeout=30,
        message="every tunnel running on the survivor",
    )
    assert twice == []
    for tunnel in tunnels:
        assert wait_fetch(int(tunnel.local_port), target_server.greeting)


def test_the_worker_raises_its_open_files_limit_for_a_pidfd_per_process():
    # In a child: the test process keeps its own limits. Started with 1024/4096, as a login shell has.
    code = (
        "import resource, django; django.setup()\n"
        "from tunnels.worker.loop import raise_open_files_limit\n"
        "print(raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )

    def limited():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limited, check=True, timeout=60
    ).stdout.split()
    expected = 65536 if _may_raise_hard_limits() else 4096
    assert [int(x) for x in out] == [expected, expected, expected]


def _may_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE (bit 24) in the effective set: root has it, except in some containers (this one)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("CapEff:"))
    return bool(int(line.split()[1], 16) >> 24 & 1)
