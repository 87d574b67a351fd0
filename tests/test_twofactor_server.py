"""The two-factor test server (tests/twofactor_server.py) driven by plain OpenSSH ``ssh``.

Proves what the interactive-tunnel tests rely on: ssh is asked exactly two questions ("Password:",
then "Verification code:") through its askpass helper, the login succeeds only with both answers
right, the host key is the per-run key the fixture reports, and -L / -R carry traffic.

The askpass helper here is test-only: it reads its answers from a 0600 file (the product never
does this; its helper asks the worker over a socket).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.procs import free_port, kill_group, pool_port, spawn, wait_for
from tests.twofactor_server import CODE_PROMPT, PASSWORD_PROMPT, running_twofactor
from tests.worker_fixtures import fetch, wait_fetch

pytestmark = pytest.mark.timeout(60)

# Prints the answer for the Nth question ssh asks (the Nth line of the answers file) and records the question.
ASKPASS = """#!/bin/sh
printf '%s\\n' "$1" >> '{asked}'
n=$(wc -l < '{asked}')
sed -n "${{n}}p" '{answers}'
"""


@pytest.fixture
def twofactor(tmp_path):
    with running_twofactor(tmp_path / "server") as server:
        yield server


class Client:
    """``ssh -N`` to the server with answers from a file; killed by process group at the end."""

    def __init__(self, server, workdir, answers: list[str]):
        self.server = server
        self.workdir = workdir
        self.asked = workdir / "asked"
        self.log = workdir / "ssh.log"
        answers_file = workdir / "answers"
        fd = os.open(answers_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(f"{answer}\n" for answer in answers))
        self.askpass = workdir / "askpass"
        self.askpass.write_text(ASKPASS.format(asked=self.asked, answers=answers_file))
        self.askpass.chmod(0o700)
        self.known_hosts = workdir / "known_hosts"
        self.known_hosts.write_text(server.known_host_line + "\n")
        self.proc = None

    def argv(self, *forwards: str) -> list[str]:
        options = {
            "BatchMode": "no",
            "PubkeyAuthentication": "no",
            "PasswordAuthentication": "no",
            "PreferredAuthentications": "keyboard-interactive",
            "NumberOfPasswordPrompts": "1",
            "StrictHostKeyChecking": "yes",  # only the key the fixture generated is accepted
            "UserKnownHostsFile": str(self.known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "ExitOnForwardFailure": "yes",
            "ConnectTimeout": "5",
        }
        argv = ["ssh", "-F", "/dev/null", "-N", "-p", str(self.server.port)]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, *forwards, self.server.destination]

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "SSH_AUTH_SOCK")}
        env.update({"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force"})
        return env

    def start(self, *forwards: str) -> Client:
        self.proc = spawn(self.argv(*forwards), self.log, env=self.env(), cwd=self.workdir)
        return self

    def questions(self) -> list[str]:
        return self.asked.read_text().splitlines() if self.asked.exists() else []

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc)


@pytest.fixture
def clients(tmp_path):
    made: list[Client] = []

    def make(server, answers: list[str]) -> Client:
        workdir = tmp_path / f"client-{len(made)}"
        workdir.mkdir()
        made.append(Client(server, workdir, answers))
        return made[-1]

    yield make
    for client in made:
        client.stop()


def expected_questions(server, *prompts: str) -> list[str]:
    # OpenSSH puts "(user@host) " before a keyboard-interactive prompt.
    return [f"({server.user}@{server.host}) {prompt}" for prompt in prompts]


@pytest.mark.parametrize("flag", ["-L", "-R"])
def test_asks_password_then_code_and_forwards_traffic(twofactor, clients, target_server, flag):
    # -L listens here (a pool port); -R makes the server listen (any free port).
    port = pool_port() if flag == "-L" else free_port()
    client = clients(twofactor, [twofactor.password, twofactor.code]).start(
        flag, f"127.0.0.1:{port}:127.0.0.1:{target_server.port}"
    )
    wait_fetch(port, target_server.greeting, timeout=15)
    assert client.proc.poll() is None
    assert client.questions() == expected_questions(twofactor, PASSWORD_PROMPT, CODE_PROMPT)
    events = twofactor.events()
    assert "login ok: otp-user" in events
    expected = f"to 127.0.0.1:{target_server.port}" if flag == "-L" else f"on 127.0.0.1:{port}"
    assert f"forward {flag} {expected}: allowed" in events
    # The server's log names no answer.
    assert not any(twofactor.password in line or twofactor.code in line for line in events)


@pytest.mark.parametrize(
    ("which", "asked", "event"),
    [
        ("password", (PASSWORD_PROMPT,), "login failed: wrong password"),
        ("code", (PASSWORD_PROMPT, CODE_PROMPT), "login failed: wrong code"),
    ],
)
def test_a_wrong_answer_is_permission_denied(twofactor, clients, which, asked, event):
    answers = [twofactor.password, twofactor.code]
    answers[0 if which == "password" else 1] += "x"
    client = clients(twofactor, answers).start()
    wait_for(lambda: client.proc.poll() is not None, timeout=15, message="ssh to give up")
    assert client.proc.returncode == 255
    assert "Permission denied (keyboard-interactive)" in client.output()
    assert client.questions() == expected_questions(twofactor, *asked)
    assert event in twofactor.events()
    assert "login ok: otp-user" not in twofactor.events()


def test_the_host_key_is_the_fixtures(twofactor, tmp_path):
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(twofactor.port), twofactor.host],
        capture_output=True,
        text=True,
        timeout=15,
    ).stdout.split()
    assert scanned[1:3] == twofactor.known_host_line.split()[1:3]
    with running_twofactor(tmp_path / "second") as second:
        assert second.known_host_line.split()[2] != twofactor.known_host_line.split()[2]  # generated per run


def test_offers_no_other_method_and_no_forward_off_loopback(twofactor, clients):
    client = clients(twofactor, [twofactor.password, twofactor.code])
    argv = client.argv("-L", f"127.0.0.1:{pool_port()}:target.invalid:80")
    argv[argv.index("PreferredAuthentications=keyboard-interactive")] = "PreferredAuthentications=password,publickey"
    denied = subprocess.run(
        argv, env=client.env(), capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
    )
    assert denied.returncode == 255
    assert "Permission denied (keyboard-interactive)" in denied.stderr
    assert client.questions() == []

    port = pool_port()
    client.start("-L", f"127.0.0.1:{port}:target.invalid:80")
    wait_for(lambda: "login ok: otp-user" in twofactor.events(), timeout=15, message="login")
    assert fetch(port, timeout=2) == ""
    wait_for(lambda: "forward -L to target.invalid:80: refused" in twofactor.events(), timeout=5, message="refusal")
