"""The askpass broker and helper (tunnels.worker.askpass, .prompting, tunnels.ssh.askpass) with real
processes: who may ask (SO_PEERCRED and the master's process tree), which attempt, what is answered."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest

from tests.factories import make_tunnel
from tests.procs import wait_for
from tunnels import prompts
from tunnels.models import AuthPrompt
from tunnels.ssh import askpass, master
from tunnels.worker import prompting
from tunnels.worker.askpass import Broker

pytestmark = pytest.mark.django_db(transaction=True)  # the broker's threads read what the test wrote

# A stand-in for the ssh master: runs the helper as its child, as ssh does, and passes on what it printed.
FAKE_MASTER = (
    "import subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)\n"
    "sys.stdout.buffer.write(done.stdout)\n"
    "sys.exit(done.returncode)\n"
)


@pytest.fixture
def broker(settings):
    handle = Broker(node="test-broker").start()
    yield handle
    handle.close()


@pytest.fixture
def helper(settings):
    return askpass.install()


def helper_env(broker: Broker, nonce: str, **extra: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], askpass.SOCKET_ENV: str(broker.path), askpass.NONCE_ENV: nonce}
    env.update(extra)
    return env


def run_under_master(broker: Broker, attempt, helper, nonce: str | None = None, **extra: str) -> subprocess.Popen:
    """The helper run by a stand-in master whose pid the broker knows for ``attempt``."""
    env = helper_env(broker, nonce or attempt.nonce, **extra)
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_MASTER, str(helper), "Password:"],
        env=env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    broker.spawned(attempt.nonce, proc.pid, None)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, bytes]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out


def new_attempt(broker: Broker, tunnel, responses: list[str] | None = None):
    prompts.preload(tunnel, responses)
    attempt = broker.register(tunnel.pk, "1-test")
    prompts.begin(tunnel.pk, attempt.attempt)
    return attempt


def test_socket_is_0600_in_a_0700_dir_and_fits_sun_path(broker):
    info = os.lstat(broker.path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    parent = os.lstat(broker.path.parent)
    assert stat.S_IMODE(parent.st_mode) == 0o700 and parent.st_uid == os.geteuid()
    assert broker.path.parent == master.runtime_dir()
    assert len(str(broker.path).encode()) < 108


def test_helper_is_installed_0700_with_our_interpreter(helper, settings):
    assert stat.S_IMODE(os.stat(helper).st_mode) == 0o700
    assert helper.parent == settings.DATA_DIR / "run"
    assert helper.read_text().startswith(f"#!{sys.executable} -I\n")
    assert askpass.install() == helper  # the same content: the same file


def test_an_answer_given_with_the_start_goes_to_the_masters_helper(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel, ["s3cret-one"])

    code, out = finish(run_under_master(broker, attempt, helper))

    assert (code, out) == (0, b"s3cret-one\n")
    assert prompts.pending(tunnel) is None  # nobody was asked


def test_the_users_answer_goes_to_the_helper_once(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel)
    proc = run_under_master(broker, attempt, helper)

    pending = wait_for(lambda: prompts.pending(tunnel), timeout=10, message="the prompt")
    assert pending.prompt == "Password:" and attempt.waiting
    prompts.answer(tunnel, "typed-by-user")
    code, out = finish(proc)

    assert (code, out) == (0, b"typed-by-user\n")
    row = AuthPrompt.objects.get(tunnel=tunnel)
    assert (row.answer, row.prompt) == ("", "")  # taken and erased
    assert not attempt.waiting


def test_a_process_that_is_not_run_by_the_master_is_refused(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel, ["never-handed-out"])
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        broker.spawned(attempt.nonce, bystander.pid, None)  # the "master" is another process
        # The helper is run by this test, not by the registered master: right nonce, wrong parent.
        done = subprocess.run([str(helper), "Password:"], env=helper_env(broker, attempt.nonce), capture_output=True)
    finally:
        bystander.kill()
        bystander.wait()

    assert (done.returncode, done.stdout) == (1, b"")
    row = AuthPrompt.objects.get(tunnel=tunnel)
    assert row.responses != "" and row.prompt == ""  # nothing asked, nothing taken


def test_a_wrong_nonce_is_refused(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel, ["never-handed-out"])

    code, out = finish(run_under_master(broker, attempt, helper, nonce="0" * 32))

    assert (code, out) == (1, b"")
    assert AuthPrompt.objects.get(tunnel=tunnel).responses != ""


def test_a_confirmation_is_never_asked(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel, ["yes"])

    code, out = finish(run_under_master(broker, attempt, helper, SSH_ASKPASS_PROMPT="confirm"))

    assert (code, out) == (1, b"")
    assert AuthPrompt.objects.get(tunnel=tunnel).responses != ""  # the broker was not even asked


def test_a_forgotten_attempt_is_refused_while_it_waits(broker, helper, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel)
    proc = run_under_master(broker, attempt, helper)
    wait_for(lambda: attempt.waiting, timeout=10, message="the helper waiting")

    broker.forget(attempt.nonce)  # the worker ended the attempt (a stop)

    assert finish(proc, timeout=5) == (1, b"")
    assert broker.get(attempt.nonce) is None


def test_nobody_answering_times_out_with_the_prompt_in_the_reason(broker, owner):
    tunnel = make_tunnel(owner, interactive=True)
    attempt = new_attempt(broker, tunnel)
    started = time.monotonic()

    assert prompting.obtain(attempt, "Verification code:", timeout=1) is None

    assert 0.9 <= time.monotonic() - started < 3
    assert attempt.outcome == "login timed out: nobody answered 'Verification code:' within 1 s"


def test_descends_from_follows_the_parent_chain_only(owner):
    me = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert prompting.descends_from(child.pid, me, None)
        assert not prompting.descends_from(me, child.pid, None)
        assert not prompting.descends_from(child.pid, me, 12345.0)  # another process that had our pid
    finally:
        child.kill()
        child.wait()


def test_a_login_waiting_for_an_answer_holds_no_startup_slot():
    from tunnels.worker.askpass import Attempt
    from tunnels.worker.tracked import Tracked

    tracked = Tracked(tunnel_id=1, pid=1, create_time=None, pgid=1, generation=1, offset=0, master=True)
    tracked.login = Attempt(tunnel_id=1, attempt="1-a", nonce="n")
    assert tracked.authenticating  # connecting: counts against WORKER_MAX_STARTUPS like any start
    tracked.login.waiting = True
    assert not tracked.authenticating and tracked.waiting_for_answer  # a person may take minutes
