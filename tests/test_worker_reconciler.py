"""The reconciler's decisions that need no ssh: claiming, leases, failure words, pass cost."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.factories import make_tunnel, tunnel_data
from tests.worker_fixtures import make_key
from tunnels import services
from tunnels.agent import agent_processes
from tunnels.models import Desired, ExitReason, Status, Tunnel, TunnelSession, WorkerNode
from tunnels.reconciler import Reconciler, explain
from tunnels.ssh import NO_KEY_ERROR
from tunnels.worker.decide import GONE_MASTER

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "line,words",
    [
        ("bind [127.0.0.1]:8080: Address already in use", "address already in use"),
        ("root@127.0.0.1: Permission denied (publickey).", "permission denied (publickey)"),
        ("ssh: connect to host 10.0.0.1 port 22: Connection refused", "connection refused"),
        ("Host key verification failed.", "host key verification failed"),
        ("Error: remote port forwarding failed for listen port 9000", "remote port forwarding failed"),
        ("ssh: connect to host 10.0.0.1 port 22: Connection timed out", "connection timed out"),
        ("ssh: Could not resolve hostname nowhere: Name or service not known", "unknown host"),
    ],
)
def test_ssh_failures_are_explained_in_plain_words(owner, line, words):
    tunnel = make_tunnel(owner)
    message, _ = explain(f"Authenticated to x\n{line}\n", tunnel)
    assert message.startswith(words)
    assert line.strip() in message  # ssh's own words stay visible


def test_channel_errors_of_a_working_forward_are_not_failures(owner):
    tunnel = make_tunnel(owner)
    assert explain("channel 2: open failed: connect failed: Connection refused\n", tunnel) is None


def test_heartbeat_registers_the_node(owner):
    Reconciler("node-a").reconcile_once()
    node = WorkerNode.objects.get(name="node-a")
    assert services.live_workers().filter(pk=node.pk).exists()


def test_interactive_tunnel_whose_login_ended_elsewhere_needs_auth_and_is_never_started(owner):
    # Meant to run, this generation's login made (by a lost node, or before a restart), no master here.
    tunnel = make_tunnel(owner, interactive=True)
    Tunnel.objects.filter(pk=tunnel.pk).update(desired_state=Desired.RUNNING, running_generation=tunnel.generation)
    services.bump_marker()

    reconciler = Reconciler("node-a")
    reconciler.reconcile_once()
    reconciler.reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.last_error, tunnel.pid) == (Status.NEEDS_AUTH, GONE_MASTER, None)
    assert (tunnel.desired_state, tunnel.node) == (Desired.STOPPED, "")
    assert reconciler.tracked == {}


def test_tunnel_of_a_live_node_is_left_alone(owner):
    WorkerNode.objects.create(name="node-b", last_seen=timezone.now())
    tunnel = make_tunnel(owner, interactive=True)
    Tunnel.objects.filter(pk=tunnel.pk).update(node="node-b", desired_state=Desired.RUNNING)

    Reconciler("node-a").reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.node, tunnel.status) == ("node-b", Status.STOPPED)


def test_tunnel_of_a_node_past_its_lease_is_claimed(owner, settings):
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS + 1)
    WorkerNode.objects.create(name="node-b", last_seen=stale)
    tunnel = make_tunnel(owner, interactive=True)
    Tunnel.objects.filter(pk=tunnel.pk).update(node="node-b", desired_state=Desired.RUNNING)

    Reconciler("node-a").reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.node, tunnel.status) == ("node-a", Status.FAILED)


def test_claim_is_compare_and_swap(owner):
    tunnel = make_tunnel(owner)
    first, second = Reconciler("node-a"), Reconciler("node-b")
    stale_copy = Tunnel.objects.get(pk=tunnel.pk)

    assert first.claim(tunnel)
    assert not second.claim(stale_copy)  # it read node="" before node-a claimed it
    assert Tunnel.objects.get(pk=tunnel.pk).node == "node-a"


def test_a_claimed_tunnel_of_a_lost_node_is_starting_until_it_runs_here(owner, settings):
    """Its start may wait for a slot: until then the row must not keep saying the lost node's 'running'."""
    settings.WORKER_START_BATCH = 0  # no start slot in this pass: the claimed tunnel is queued
    owner.is_staff = True  # the server's key: no key of its own needed to start
    owner.save(update_fields=["is_staff"])
    stale = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS + 1)
    WorkerNode.objects.create(name="node-b", last_seen=stale)
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(
        node="node-b", desired_state=Desired.RUNNING, status=Status.RUNNING, pid=4242
    )
    lost = TunnelSession.objects.create(
        tunnel=tunnel, owner=owner, tunnel_uuid=tunnel.uuid, name=tunnel.name, node="node-b", pid=4242
    )

    Reconciler("node-a").reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.node, tunnel.status, tunnel.pid) == ("node-a", Status.STARTING, None)
    lost.refresh_from_db()  # the lost node cannot end it: the claim does, so only one stays open
    assert lost.ended_at is not None and lost.exit_reason == ExitReason.NODE_LOST


def test_a_claim_keeps_running_when_the_process_runs_here_to_be_adopted(owner):
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(node="node-b", status=Status.RUNNING, pid=4242)
    tunnel.refresh_from_db()

    assert Reconciler("node-a").claim(tunnel, process_here=True)

    tunnel.refresh_from_db()
    assert (tunnel.node, tunnel.status, tunnel.pid) == ("node-a", Status.RUNNING, 4242)


def test_stopped_tunnel_is_settled_and_released(owner):
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(
        node="node-a", desired_state=Desired.STOPPED, status=Status.FAILED, consecutive_failures=3
    )

    Reconciler("node-a").reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.node, tunnel.consecutive_failures) == (Status.STOPPED, "", 0)


def test_a_pass_over_many_stopped_tunnels_costs_a_fixed_number_of_queries(owner, django_assert_max_num_queries):
    Tunnel.objects.bulk_create([Tunnel(owner=owner, hash=f"{i:032x}", **tunnel_data(name=f"s{i}")) for i in range(300)])
    reconciler = Reconciler("node-a")
    reconciler.reconcile_once(full=True)

    with django_assert_max_num_queries(5):
        # marker, node list, tunnels, the resync's open sessions of this node (heartbeat throttled)
        reconciler.reconcile_once(full=True)


def test_once_command_runs_a_full_pass(owner):
    call_command("tunnel_worker", "--once", "--node", "node-once")
    assert WorkerNode.objects.filter(name="node-once").exists()


def test_non_staff_tunnel_without_a_key_fails_once_and_is_never_retried(owner):
    tunnel = make_tunnel(owner)
    reconciler = Reconciler("node-a")

    for _ in range(3):
        reconciler.reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert (tunnel.status, tunnel.last_error, tunnel.pid) == (Status.FAILED, NO_KEY_ERROR, None)
    assert (tunnel.restart_count, tunnel.consecutive_failures, tunnel.backoff_until) == (0, 0, None)
    assert reconciler.tracked == {}


def test_an_expired_key_fails_the_tunnel_before_anything_starts(owner, data_dir):
    key = make_key(owner, expires_at=timezone.now() - timedelta(minutes=1))
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(ssh_key=key)
    reconciler = Reconciler("node-a")

    reconciler.reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert tunnel.status == Status.FAILED and "has expired" in tunnel.last_error
    assert reconciler.tracked == {} and agent_processes(data_dir) == []


def test_a_worker_error_reaches_last_error_without_server_paths(owner, data_dir):
    # A real failure to start: the logs directory cannot be created because a file has its name.
    (data_dir / "logs").write_text("not a directory")
    # An address (TEST-NET-3): the worker resolves the destination before it starts anything.
    tunnel = make_tunnel(owner, remote_host="user@203.0.113.5")
    Tunnel.objects.filter(pk=tunnel.pk).update(ssh_key=make_key(owner), desired_state=Desired.RUNNING)

    Reconciler("node-a").reconcile_once(full=True)

    tunnel.refresh_from_db()
    assert tunnel.status in (Status.BACKOFF, Status.FAILED)
    assert tunnel.last_error.startswith("worker error: ")
    assert str(data_dir) not in tunnel.last_error and "<data>" in tunnel.last_error


def test_a_starting_tunnel_is_looked_at_only_once_it_can_have_moved(owner, data_dir, monkeypatch):
    # A tunnel started here, checked once, not logged in: only its log growing or its deadline brings it back.
    from tunnels import logfiles
    from tunnels.worker import attention as module
    from tunnels.worker.tracked import Tracked

    tunnel = make_tunnel(owner)
    key = str(tunnel.uuid)
    log = logfiles.path_for(key)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("=== starting\n")
    tracked = Tracked(tunnel.pk, 1, None, 1, tunnel.generation, log.stat().st_size, log_whole=True, first_check=100.0)
    reconciler = Reconciler("node-a")
    reconciler.tracked[key] = tracked
    monkeypatch.setattr(module, "autossh_gate_seconds", lambda: 15)
    assert reconciler._attention(101.0) == set()
    assert reconciler._attention(115.0) == {tunnel.pk}  # its deadline
    with open(log, "a") as handle:
        handle.write('Authenticated to 127.0.0.1 ([127.0.0.1]:22) using "publickey".\n')
    assert reconciler._attention(101.0) == {tunnel.pk}  # it wrote: read it
    tracked.offset, tracked.seen = log.stat().st_size, "Authenticated to 127.0.0.1"
    assert reconciler._attention(101.0) == {tunnel.pk}  # logged in: its forward comes next
    tracked.seen, tracked.log_whole = "", False
    assert reconciler._attention(101.0) == {tunnel.pk}  # a log rotated (or adopted): the table decides


def test_the_tracked_table_knows_which_processes_are_not_up_without_looking_at_all():
    from tunnels.worker.tracked import Tracked, TrackedTable

    table = TrackedTable()
    for n in range(3):
        table[f"t{n}"] = Tracked(n, 100 + n, None, 100 + n, 1, 0)
    assert sorted(key for key, _ in table.unsettled()) == ["t0", "t1", "t2"]
    table["t0"].healthy = True
    table.pop("t1")
    assert [key for key, _ in table.unsettled()] == ["t2"]
    table["t0"].healthy = False  # its connection dropped
    table.unsettle("t0")
    assert sorted(key for key, _ in table.unsettled()) == ["t0", "t2"]
    table["t2"] = Tracked(2, 200, None, 200, 1, 0)  # restarted: a new process under the same key
    table["t2"].healthy = True
    assert [key for key, _ in table.unsettled()] == ["t0"]
