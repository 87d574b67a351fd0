"""End-to-end: interactive tunnels (plain ssh control masters, password via the askpass broker)
run by the real worker through a real password sshd on loopback."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.interactive_servers import password_sshd
from tests.procs import pool_port, wait_for
from tests.worker_fixtures import fetch, wait_fetch, wait_gone, wait_status
from tunnels import prompts, services
from tunnels.models import AuthPrompt, Desired, ExitReason, Status, Tunnel, TunnelSession
from tunnels.ssh import master

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

FAST = {"TUNNELSITE_PROMPT_TIMEOUT": "5"}
_names = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def pw_sshd(tmp_path_factory):
    with password_sshd(tmp_path_factory.mktemp("pwsshd")) as server:
        yield server


def make_interactive(owner, server, target) -> Tunnel:
    data = {
        "name": f"login-{os.getpid()}-{next(_names)}",
        "remote_host": server.destination,
        "ssh_port": server.port,
        "local_port": str(pool_port()),
        "remote_port": f"127.0.0.1:{target.port}",
        "interactive": True,
    }
    return services.create_tunnel(owner, data)


def wait_prompt(tunnel: Tunnel, timeout: float = 15.0) -> prompts.Pending:
    return wait_for(lambda: prompts.pending(tunnel), timeout=timeout, message=f"a prompt of {tunnel.name}")


def ended_session(tunnel: Tunnel) -> TunnelSession:
    """The tunnel's one session once its end is written (the worker writes it at the end of the pass,
    after the tunnel's status)."""
    return wait_for(
        lambda: TunnelSession.objects.filter(tunnel=tunnel).exclude(ended_at=None).first(),
        timeout=5,
        message=f"the session of {tunnel.name} ended",
    )


def local_port(tunnel: Tunnel) -> int:
    return int(tunnel.local_port.rpartition(":")[2])


def master_process(tunnel: Tunnel) -> psutil.Process:
    tunnel.refresh_from_db()
    return psutil.Process(tunnel.pid)


def test_prompt_answered_runs_the_tunnel_and_carries_traffic(worker_factory, owner, pw_sshd, target_server):
    worker = worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)

    pending = wait_prompt(tunnel)
    assert "password" in pending.prompt.lower()
    assert pending.echo is False
    tunnel.refresh_from_db()
    assert tunnel.status == Status.STARTING
    services.answer_prompt(tunnel, pw_sshd.password)

    wait_status(tunnel, Status.RUNNING, timeout=15)
    assert wait_fetch(local_port(tunnel), target_server.greeting)
    proc = master_process(tunnel)
    assert proc.name() == "ssh" and "-M" in proc.cmdline()
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()  # the login left nothing behind
    session = TunnelSession.objects.get(tunnel=tunnel)
    assert session.pid == tunnel.pid and session.ended_at is None

    services.request_stop(tunnel)
    wait_status(tunnel, Status.STOPPED)
    wait_gone([proc.pid])
    session.refresh_from_db()
    assert session.exit_reason == ExitReason.STOPPED_BY_USER
    # Ended through its control socket (ssh -O exit), the group kill only behind it.
    assert f"ssh master pid {proc.pid} asked to exit through its control socket" in worker.log_text()


def test_wrong_answer_fails_with_permission_denied_and_is_not_retried(worker_factory, owner, pw_sshd, target_server):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)
    wait_prompt(tunnel)
    services.answer_prompt(tunnel, pw_sshd.password + "-wrong")

    wait_status(tunnel, Status.FAILED, timeout=15)
    assert "permission denied" in tunnel.last_error
    assert tunnel.desired_state == Desired.STOPPED and tunnel.pid is None
    assert ended_session(tunnel).exit_reason == ExitReason.AUTH_FAILED
    time.sleep(2)  # several passes: nothing starts it again, nothing asks again
    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.desired_state) == (Status.FAILED, Desired.STOPPED)
    assert TunnelSession.objects.filter(tunnel=tunnel).count() == 1
    assert prompts.pending(tunnel) is None


def test_unanswered_prompt_times_out_with_a_reason(worker_factory, owner, pw_sshd, target_server):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)
    pending = wait_prompt(tunnel)
    assert 4 <= pending.seconds_left <= 5

    wait_status(tunnel, Status.FAILED, timeout=15)
    assert tunnel.last_error.startswith("login timed out: nobody answered '")
    assert "within 5 s" in tunnel.last_error
    assert tunnel.desired_state == Desired.STOPPED
    assert ended_session(tunnel).exit_reason == ExitReason.AUTH_FAILED
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()


def test_answers_given_with_the_start_need_no_prompt(worker_factory, owner, pw_sshd, target_server):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel, responses=[pw_sshd.password])

    seen_prompt = []

    def running():
        if prompts.pending(tunnel) is not None:
            seen_prompt.append(True)
        tunnel.refresh_from_db()
        return tunnel.status == Status.RUNNING

    wait_for(running, timeout=15, message="running with answers given up front")
    assert not seen_prompt
    assert wait_fetch(local_port(tunnel), target_server.greeting)
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()


def test_worker_restart_adopts_the_master_without_a_prompt(worker_factory, owner, pw_sshd, target_server):
    worker = worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel, responses=[pw_sshd.password])
    wait_status(tunnel, Status.RUNNING, timeout=15)
    pid = tunnel.pid

    worker.kill()  # a crash: the master keeps running
    assert psutil.pid_exists(pid)
    worker.start()
    wait_for(lambda: f"adopted tunnel {tunnel.name}" in worker.log_text(), timeout=15, message="adoption")
    time.sleep(1)  # a few passes of the new worker

    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.pid) == (Status.RUNNING, pid)
    assert prompts.pending(tunnel) is None
    assert target_server.greeting in fetch(local_port(tunnel))
    assert TunnelSession.objects.filter(tunnel=tunnel, ended_at=None).count() == 1

    # Its control socket works for the new worker's supervision: ssh -O exit ends it, never restarted.
    assert master.control(master.control_path(tunnel), "check")
    assert master.control(master.control_path(tunnel), "exit")
    wait_status(tunnel, Status.NEEDS_AUTH, timeout=10)
    assert tunnel.last_error.startswith("ssh master ended (")


def test_a_worker_crash_during_a_login_ends_it_as_needs_auth(worker_factory, owner, pw_sshd, target_server):
    """The helper loses the broker with the worker: ssh's login fails; the new worker never logs in again."""
    worker = worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)
    wait_prompt(tunnel)
    pid = master_process(tunnel).pid

    worker.kill()
    wait_gone([pid])
    worker.start()

    wait_status(tunnel, Status.NEEDS_AUTH, timeout=10)
    assert "log in" in tunnel.last_error and tunnel.desired_state == Desired.STOPPED
    assert prompts.pending(tunnel) is None
    assert TunnelSession.objects.filter(tunnel=tunnel, ended_at=None).count() == 0


def test_killed_master_needs_auth_is_not_restarted_and_a_new_start_prompts(
    worker_factory, owner, pw_sshd, target_server
):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel, responses=[pw_sshd.password])
    wait_status(tunnel, Status.RUNNING, timeout=15)
    pid = tunnel.pid

    os.kill(pid, signal.SIGKILL)
    wait_status(tunnel, Status.NEEDS_AUTH, timeout=10)
    assert "ssh master ended (killed by SIGKILL)" in tunnel.last_error
    assert "log in" in tunnel.last_error
    assert tunnel.desired_state == Desired.STOPPED
    time.sleep(2)  # several passes: never restarted
    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.pid) == (Status.NEEDS_AUTH, None)
    assert TunnelSession.objects.filter(tunnel=tunnel, ended_at=None).count() == 0
    assert ended_session(tunnel).exit_reason == ExitReason.CRASHED

    services.request_start(tunnel)
    wait_prompt(tunnel)
    services.answer_prompt(tunnel, pw_sshd.password)
    wait_status(tunnel, Status.RUNNING, timeout=15)
    assert tunnel.pid != pid
    assert wait_fetch(local_port(tunnel), target_server.greeting)


def test_remote_forward_runs_after_the_login(worker_factory, owner, pw_sshd, target_server):
    """-R: the server listens, the master forwards back to the target here; up once it authenticated."""
    worker_factory(extra_env=FAST)
    remote_port = pool_port()
    data = {
        "name": f"login-r-{os.getpid()}-{next(_names)}",
        "remote_host": pw_sshd.destination,
        "ssh_port": pw_sshd.port,
        "direction": "local_to_remote",
        "local_port": str(target_server.port),
        "remote_port": str(remote_port),
        "interactive": True,
    }
    tunnel = services.create_tunnel(owner, data)
    services.request_start(tunnel)
    wait_prompt(tunnel)
    services.answer_prompt(tunnel, pw_sshd.password)

    wait_status(tunnel, Status.RUNNING, timeout=15)
    assert wait_fetch(remote_port, target_server.greeting)


def test_stop_while_a_prompt_waits_ends_the_login(worker_factory, owner, pw_sshd, target_server):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)
    wait_prompt(tunnel)
    pid = master_process(tunnel).pid

    services.request_stop(tunnel)

    wait_status(tunnel, Status.STOPPED, timeout=10)
    wait_gone([pid])
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()
    assert ended_session(tunnel).exit_reason == ExitReason.STOPPED_BY_USER
    with pytest.raises(prompts.NoPrompt):
        services.answer_prompt(tunnel, pw_sshd.password)


def test_a_start_while_a_prompt_waits_begins_a_new_login_with_its_answers(
    worker_factory, owner, pw_sshd, target_server
):
    worker_factory(extra_env=FAST)
    tunnel = make_interactive(owner, pw_sshd, target_server)
    services.request_start(tunnel)
    wait_prompt(tunnel)
    first = master_process(tunnel).pid

    services.request_start(tunnel, responses=[pw_sshd.password])  # e.g. a script that knows the password

    wait_status(tunnel, Status.RUNNING, timeout=15)
    assert tunnel.pid != first
    wait_gone([first])
    assert wait_fetch(local_port(tunnel), target_server.greeting)
    assert not AuthPrompt.objects.filter(tunnel=tunnel).exists()


# Two prompts (password, then a one-time code) through a two-factor server: tests/test_interactive_twofactor.py.
