"""End-to-end: the answers of an interactive login are nowhere in plain form, at every step.

With the real worker, real ssh and its askpass helper, answers given through the REST API (so the
request history is part of what is searched), ``tests.secret_scan.find_secret`` searches the whole
database (every table, and the SQLite files' bytes with their free pages and WAL), every file of
the data dir (tunnel logs, the worker's log) and of the interactive runtime dir (the sockets' dir),
the environment and argv of every process (the worker, its ssh masters, their askpass helpers) and
``ps``. It must find nothing: right after an answer was given, when the tunnel runs, and after the
answer TTL (short here) erased what was left. tests/test_secret_scan.py proves that it finds a
planted secret in each of these kinds of place.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import client_for
from tests.interactive_servers import interactive_tunnel, password_sshd, wait_question
from tests.procs import wait_for
from tests.secret_scan import find_secret
from tests.twofactor_server import CODE_PROMPT, PASSWORD_PROMPT, running_twofactor
from tests.worker_fixtures import wait_fetch, wait_status
from tunnels.models import AuthPrompt, Status, Tunnel
from tunnels.ssh.master import runtime_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TTL = 5  # PROMPT_ANSWER_TTL's minimum
WORKER_ENV = {"TUNNELSITE_PROMPT_TIMEOUT": "30", "TUNNELSITE_PROMPT_ANSWER_TTL": str(TTL)}


@pytest.fixture
def short_ttl(settings):
    settings.PROMPT_ANSWER_TTL = TTL


def assert_nowhere(worker, data_dir, *secrets: str) -> None:
    for secret in secrets:
        found = find_secret(secret, data_dir=data_dir, worker_pid=worker.proc.pid, extra_files=[runtime_dir(data_dir)])
        assert found == [], f"an answer was found in plain form: {found}"


def answer(client, tunnel: Tunnel, text: str) -> None:
    response = client.post(f"/api/v1/tunnels/{tunnel.uuid}/prompt/", {"answer": text}, format="json")
    assert response.status_code == 202, response.content
    assert text not in response.content.decode()


def test_a_password_login_leaves_the_password_nowhere(
    worker_factory, owner, target_server, data_dir, short_ttl, tmp_path
):
    worker = worker_factory(extra_env=WORKER_ENV)
    client = client_for(owner)
    with password_sshd(tmp_path / "pwsshd") as server:
        tunnel = interactive_tunnel(owner, server, target_server)
        assert client.post(f"/api/v1/tunnels/{tunnel.uuid}/start/", {}, format="json").status_code == 200
        wait_question(tunnel, "password:")
        assert_nowhere(worker, data_dir, server.password)  # asked: nothing is known yet, nothing leaked

        answer(client, tunnel, server.password)
        assert_nowhere(worker, data_dir, server.password)  # answered: on its way to ssh, encrypted

        wait_status(tunnel, Status.RUNNING, timeout=20)
        wait_fetch(int(tunnel.local_port), target_server.greeting)
        assert_nowhere(worker, data_dir, server.password)  # running: the master and its helper hold nothing

        time.sleep(TTL + 2)  # past the answer TTL
        assert not AuthPrompt.objects.exclude(answer="", responses="").exists()
        assert_nowhere(worker, data_dir, server.password)
        tunnel.refresh_from_db()
        assert tunnel.status == Status.RUNNING


def test_two_factor_answers_given_up_front_and_left_unused_are_erased(
    worker_factory, owner, target_server, data_dir, short_ttl, tmp_path
):
    """Answers sent with the start wait (encrypted) until ssh asks; here the server hangs past the TTL,
    so the worker erases them: once it answers again, ssh's questions go to the user."""
    # ssh waits for the hung server's greeting longer than the answer TTL.
    worker = worker_factory(extra_env={**WORKER_ENV, "TUNNELSITE_SSH_CONNECT_TIMEOUT": "40"})
    client = client_for(owner)
    with running_twofactor(tmp_path / "twofactor") as server:
        tunnel = interactive_tunnel(owner, server, target_server, pin=server.known_host_line)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            start = client.post(
                f"/api/v1/tunnels/{tunnel.uuid}/start/", {"responses": [server.password, server.code]}, format="json"
            )
            assert start.status_code == 200, start.content
            assert server.password not in start.content.decode()
            row = AuthPrompt.objects.get(tunnel=tunnel)
            assert row.responses and server.password not in row.responses  # kept encrypted
            assert_nowhere(worker, data_dir, server.password, server.code)

            def erased():
                return AuthPrompt.objects.filter(tunnel=tunnel, responses="").exists()

            wait_for(erased, timeout=TTL + 10, message="the unused answers erased after the TTL")
            assert_nowhere(worker, data_dir, server.password, server.code)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)

        # The erased answers are not used: ssh's questions come to the user, one after the other.
        wait_question(tunnel, PASSWORD_PROMPT)
        answer(client, tunnel, server.password)
        wait_question(tunnel, CODE_PROMPT)
        assert_nowhere(worker, data_dir, server.password, server.code)
        answer(client, tunnel, server.code)

        wait_status(tunnel, Status.RUNNING, timeout=20)
        wait_fetch(int(tunnel.local_port), target_server.greeting)
        assert "login ok: otp-user" in server.events()
        assert_nowhere(worker, data_dir, server.password, server.code)
        time.sleep(TTL + 2)
        assert_nowhere(worker, data_dir, server.password, server.code)
