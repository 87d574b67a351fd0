"""Evidence the worker acts on: only the latest log line counts, exit statuses in words, history repair."""

from __future__ import annotations

import os
import signal

import pytest
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels.models import ExitReason, TunnelSession
from tunnels.reconciler import Reconciler
from tunnels.worker.bookkeeping import GONE_DETAIL
from tunnels.worker.evidence import authenticated_last, describe_exit, describe_returncode, explain, since_last_start
from tunnels.worker.outage import server_down

pytestmark = pytest.mark.django_db

REFUSED = "ssh: connect to host 10.0.0.1 port 22: Connection refused"
AUTHENTICATED = 'Authenticated to 10.0.0.1 ([10.0.0.1]:22) using "publickey".'


def test_a_failure_followed_by_a_success_is_history_not_a_reason(owner):
    tunnel = make_tunnel(owner)
    assert explain(f"{REFUSED}\n{REFUSED}\n{AUTHENTICATED}\n", tunnel) is None
    assert authenticated_last(f"{REFUSED}\n{AUTHENTICATED}\nchannel 2: open failed: connect failed\n")


def test_a_failure_after_a_success_counts(owner):
    tunnel = make_tunnel(owner)
    message, needs_user = explain(f"{AUTHENTICATED}\n{REFUSED}\n", tunnel)
    assert message.startswith("connection refused") and needs_user is False
    assert not authenticated_last(f"{AUTHENTICATED}\n{REFUSED}\n")


def test_a_dropped_connection_is_a_failure_the_owner_need_not_fix(owner):
    tunnel = make_tunnel(owner)
    message, needs_user = explain(f"{AUTHENTICATED}\nConnection to 10.0.0.1 closed by remote host.\n", tunnel)
    assert message.startswith("the connection to") and needs_user is False
    assert server_down(message) and server_down(f"reconnecting: {message}")
    assert not server_down("permission denied (publickey): the SSH server did not accept the tunnel's key")


def test_only_what_the_current_process_wrote_is_read_back():
    log = f"=== 2026-12-02 starting: autossh one\n{AUTHENTICATED}\n=== 2026-12-02 starting: autossh two\n{REFUSED}\n"
    assert since_last_start(log) == f"{REFUSED}\n"
    assert since_last_start(REFUSED) == REFUSED


@pytest.mark.parametrize(
    "status,words",
    [
        (signal.SIGKILL, "killed by SIGKILL"),
        (signal.SIGTERM, "killed by SIGTERM"),
        (1 << 8, "exit status 1"),
        (0, "exit status 0"),
        (None, "the process disappeared"),
    ],
)
def test_exit_statuses_in_words(status, words):
    assert describe_exit(status) == words


def test_a_real_wait_status_and_a_returncode_give_the_same_words():
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert describe_exit(status) == describe_returncode(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_returncode(3) == "exit status 3"


def test_the_resync_closes_sessions_of_this_node_whose_process_is_gone(owner):
    tunnel = make_tunnel(owner)
    fields = dict(tunnel=tunnel, owner=owner, tunnel_uuid=tunnel.uuid, name=tunnel.name, started_at=timezone.now())
    lost = TunnelSession.objects.create(node="node-a", pid=4242, **fields)
    elsewhere = TunnelSession.objects.create(node="node-b", pid=4343, **fields)

    Reconciler("node-a").reconcile_once(full=True)

    lost.refresh_from_db()
    elsewhere.refresh_from_db()
    assert (lost.exit_reason, lost.exit_detail) == (ExitReason.GONE, GONE_DETAIL)
    assert lost.ended_at is not None
    assert elsewhere.ended_at is None  # another node's history is that node's to repair
