"""End-to-end: an interactive tunnel to a two-factor server (tests/twofactor_server.py: "Password:",
then "Verification code:"), with the real worker, real ssh and its askpass helper.

Each prompt appears as the tunnel's pending prompt and waits for its answer; answers given with the
start are used in order without asking anyone; a wrong code fails the login as "permission denied".
The server's host key is pinned in the owner's known hosts before the start (the identities issue's
records decide host keys; nothing is asked about them).
"""

from __future__ import annotations

import pytest

from tests.interactive_servers import interactive_tunnel, wait_question
from tests.procs import wait_for
from tests.twofactor_server import CODE_PROMPT, PASSWORD_PROMPT, running_twofactor
from tests.worker_fixtures import fetch, wait_fetch, wait_status
from tunnels import hostkeys, services, sshkeys
from tunnels.models import ExitReason, HostKeyState, KnownHost, Status, TunnelSession

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# A prompt nobody answers ends the attempt after this long (a failing test does not wait 120 s).
WORKER_ENV = {"TUNNELSITE_PROMPT_TIMEOUT": "30"}


@pytest.fixture
def twofactor(tmp_path):
    with running_twofactor(tmp_path / "twofactor") as server:
        yield server


@pytest.fixture
def worker(worker_factory):
    return worker_factory(extra_env=WORKER_ENV)


def otp_tunnel(owner, server, target, name: str = "otp", pin: str | None = "server"):
    """An interactive tunnel through the two-factor server, its own key pinned unless ``pin`` says otherwise."""
    return interactive_tunnel(owner, server, target, name, pin=server.known_host_line if pin == "server" else pin)


def test_two_prompts_are_asked_one_after_the_other_then_the_tunnel_runs(worker, twofactor, owner, target_server):
    tunnel = otp_tunnel(owner, twofactor, target_server)
    actor = services.Actor(user=owner)
    services.request_start(tunnel, actor)

    first = wait_question(tunnel, PASSWORD_PROMPT)
    # ssh's own wording: "(user@host) Password:" (host as ssh names it, with the port when not 22).
    assert first.prompt.startswith(f"({twofactor.user}@") and first.echo is False
    assert first.seconds_left > 0
    tunnel.refresh_from_db()
    assert tunnel.status != Status.RUNNING
    assert fetch(int(tunnel.local_port), timeout=1) == ""  # nothing forwards before the login
    services.answer_prompt(tunnel, twofactor.password)

    second = wait_question(tunnel, CODE_PROMPT)
    assert second.prompt == first.prompt.replace(PASSWORD_PROMPT, CODE_PROMPT)
    assert "login ok: otp-user" not in twofactor.events()
    services.answer_prompt(tunnel, twofactor.code)

    wait_status(tunnel, Status.RUNNING, timeout=20)
    wait_fetch(int(tunnel.local_port), target_server.greeting)
    assert services.pending_prompt(tunnel) is None
    events = twofactor.events()
    assert events.count("asked password") == 1 and events.count("asked code") == 1
    assert "login ok: otp-user" in events


def test_answers_given_with_the_start_are_used_in_order(worker, twofactor, owner, target_server):
    tunnel = otp_tunnel(owner, twofactor, target_server)
    services.request_start(tunnel, services.Actor(user=owner), responses=[twofactor.password, twofactor.code])

    seen = []

    def running():
        pending = services.pending_prompt(tunnel)
        if pending is not None:
            seen.append(pending.prompt)
        tunnel.refresh_from_db()
        return tunnel.status == Status.RUNNING

    wait_for(running, timeout=20, message=f"running (last: {tunnel.status} {tunnel.last_error!r})")
    wait_fetch(int(tunnel.local_port), target_server.greeting)
    assert seen == []  # nobody was asked
    events = twofactor.events()
    assert events.count("asked password") == 1 and events.count("asked code") == 1
    assert "login ok: otp-user" in events


def test_a_wrong_code_fails_the_login_as_permission_denied(worker, twofactor, owner, target_server):
    tunnel = otp_tunnel(owner, twofactor, target_server)
    services.request_start(tunnel, services.Actor(user=owner), responses=[twofactor.password])
    wait_question(tunnel, CODE_PROMPT)
    services.answer_prompt(tunnel, f"{(int(twofactor.code) + 1) % 10**8:08d}")

    wait_status(tunnel, Status.FAILED, timeout=20)
    assert "permission denied" in tunnel.last_error.lower()
    assert "login failed: wrong code" in twofactor.events()
    assert "login ok: otp-user" not in twofactor.events()
    assert services.pending_prompt(tunnel) is None
    assert fetch(int(tunnel.local_port), timeout=1) == ""
    assert TunnelSession.objects.get(tunnel=tunnel).exit_reason == ExitReason.AUTH_FAILED


def test_an_unknown_server_key_is_trusted_on_first_use_without_asking(worker, twofactor, owner, target_server):
    tunnel = otp_tunnel(owner, twofactor, target_server, "otp-tofu", pin=None)
    services.request_start(tunnel, services.Actor(user=owner), responses=[twofactor.password, twofactor.code])
    wait_status(tunnel, Status.RUNNING, timeout=20)
    row = wait_for(
        lambda: KnownHost.objects.filter(owner=owner, host=twofactor.host, port=twofactor.port).first(),
        message="a known host recorded",
    )
    assert (row.state, row.source, row.key) == (HostKeyState.TRUSTED, "tofu", twofactor.known_host_line.split()[2])


def test_a_pinned_wrong_host_key_fails_before_any_question(worker, twofactor, owner, target_server):
    wrong = hostkeys.Entry("127.0.0.1", twofactor.port, *sshkeys.public_line(sshkeys.new_private_key()).split())
    tunnel = otp_tunnel(owner, twofactor, target_server, "otp-wrong-key", pin=hostkeys.format_entry(wrong))
    services.request_start(tunnel, services.Actor(user=owner))

    def failed():
        tunnel.refresh_from_db()
        assert services.pending_prompt(tunnel) is None  # host keys are never a question for the user
        return tunnel.status == Status.FAILED

    wait_for(failed, timeout=20, message=f"failed (last: {tunnel.status} {tunnel.last_error!r})")
    assert "host key changed" in tunnel.last_error
    assert "asked password" not in twofactor.events()
