"""Many tunnels at once, with real autossh through a real sshd: starts are batched and overlap with
checks, busy passes read only the tunnels that need attention, stops happen together."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.procs import pool_port, wait_for
from tests.worker_fixtures import kill_tunnel_processes, sshd_tunnel_data, wait_gone
from tunnels import processes, services
from tunnels.models import ExitReason, Status, Tunnel, TunnelSession
from tunnels.reconciler import Reconciler
from tunnels.worker.attention import CHECK_MAX

pytestmark = pytest.mark.timeout(240)

MANY = 30  # real ssh connections to one sshd: six start batches of five, checks in between
# Below the ephemeral range and outside the pool other tests pick from: a port taken by another
# test in the seconds before a start would be a real clash, not what this test is about.
QUIET_PORTS = (30000, 32767)


def stopped_tunnels(owner, count: int) -> None:
    Tunnel.objects.bulk_create(
        [
            Tunnel(owner=owner, name=f"idle{i}", hash=f"{i:032x}", remote_host="u@h", remote_port="80",
                   local_port=str(20000 + i))
            for i in range(count)
        ]
    )  # fmt: skip


def wanted_tunnels(owner, sshd, count: int) -> list[Tunnel]:
    return [services.create_tunnel(owner, sshd_tunnel_data(sshd)) for _ in range(count)]


@pytest.fixture
def reconciler(settings, sshd, data_dir):
    """An in-process reconciler whose staff tunnels use the test sshd's client key; every process it
    started is stopped at teardown."""
    settings.SSH_IDENTITY = str(sshd.client_key)
    made = Reconciler("node-batch")
    yield made
    made.stop_all()
    kill_tunnel_processes(data_dir)


@pytest.mark.django_db
def test_a_pass_starts_at_most_the_batch_and_queues_the_rest(reconciler, staff, sshd, settings):
    settings.WORKER_START_BATCH = 2
    tunnels = wanted_tunnels(staff, sshd, 5)

    reconciler.reconcile_once(full=True)

    assert len(reconciler.tracked) == 2
    assert len(reconciler._queued) == 3
    assert reconciler.next_due() <= reconciler._last_pass + CHECK_MAX  # looked at again within the interval
    assert Tunnel.objects.filter(pk__in=[t.pk for t in tunnels], status=Status.STARTING).count() == 2

    reconciler.reconcile_once()  # a busy pass: checks the two, starts two more

    assert len(reconciler.tracked) == 4 and len(reconciler._queued) == 1


@pytest.mark.django_db
def test_no_more_than_max_startups_authenticate_at_once(reconciler, staff, sshd, settings):
    settings.WORKER_MAX_STARTUPS = 3
    wanted_tunnels(staff, sshd, 6)

    reconciler.reconcile_once(full=True)

    assert len(reconciler.tracked) == 3 and len(reconciler._queued) == 3
    assert reconciler.next_due() <= reconciler._last_pass + 0.05 + 1e-6  # the loop comes back to check them


@pytest.mark.django_db
def test_a_busy_pass_reads_only_the_tunnels_that_need_attention(reconciler, staff, sshd):
    stopped_tunnels(staff, 200)
    (tunnel,) = wanted_tunnels(staff, sshd, 1)
    reconciler.reconcile_once(full=True)
    tracked = reconciler.tracked[str(tunnel.uuid)]
    assert tracked.first_check is None  # spawned, not looked at yet: its start deadline has not begun
    reconciler._next_heartbeat = time.monotonic() + 60  # a slow full pass must not make the heartbeat due

    with CaptureQueriesContext(connection) as captured:
        assert not reconciler.reconcile_once()  # not a full pass

    reads = [q["sql"] for q in captured if q["sql"].startswith("SELECT") and 'FROM "tunnels_tunnel"' in q["sql"]]
    assert len(reads) == 1, reads
    assert f"IN ({tunnel.pk})" in reads[0].replace('"', "")
    assert len(captured) <= 10, [q["sql"] for q in captured]  # marker, that tunnel, its checks and writes
    assert tracked.first_check is not None or tracked.healthy


@pytest.mark.django_db
def test_a_pass_with_nothing_to_do_reads_no_tunnel(reconciler, staff, django_assert_max_num_queries):
    stopped_tunnels(staff, 200)
    reconciler.reconcile_once(full=True)
    # On a loaded machine the full pass can outlast the heartbeat's throttle; this test is about tunnels.
    reconciler._next_heartbeat = time.monotonic() + 60

    with django_assert_max_num_queries(1):  # the change marker
        assert not reconciler.reconcile_once()


@pytest.mark.django_db
def test_stop_on_exit_stops_every_tunnel_together_and_closes_their_sessions(reconciler, staff, sshd):
    tunnels = wanted_tunnels(staff, sshd, 4)
    reconciler.reconcile_once(full=True)
    groups = [(tr.pid, processes.children(tr.pid) or []) for tr in reconciler.tracked.values()]
    assert len(groups) == 4

    reconciler.stop_all()

    wait_gone([pid for pid, children in groups for pid in (pid, *children)])
    assert reconciler.tracked == {}
    sessions = TunnelSession.objects.filter(tunnel__in=tunnels)
    assert [(s.exit_reason, s.ended_at is not None) for s in sessions] == [(ExitReason.WORKER_EXIT, True)] * 4
    assert set(Tunnel.objects.filter(pk__in=[t.pk for t in tunnels]).values_list("status", flat=True)) == {"stopped"}


def test_start_all_overlaps_starts_and_checks_and_stop_all_closes_every_session(
    worker_factory, sshd, staff, target_server
):
    worker = worker_factory(extra_env={"TUNNELSITE_WORKER_START_BATCH": "5"})
    ports = [pool_port(*QUIET_PORTS) for _ in range(MANY)]
    data = [sshd_tunnel_data(sshd, remote_port=str(target_server.port), local_port=str(port)) for port in ports]
    ids = [services.create_tunnel(staff, item, start=False).pk for item in data]
    tunnels = Tunnel.objects.filter(pk__in=ids)

    services.start_all(tunnels.all())  # (a copy: start_all evaluates the queryset it gets)
    wait_for(lambda: tunnels.filter(status=Status.RUNNING).count() == MANY, timeout=150, message="all running")

    rows = list(tunnels.all())
    retried = [t.name for t in rows if (t.consecutive_failures, t.restart_count) != (0, 0)]
    assert not retried, worker.log_text()  # nothing failed or retried
    sessions = TunnelSession.objects.filter(tunnel_id__in=ids)
    assert sessions.count() == MANY  # one process per tunnel
    # The first tunnel ran before the last one was even spawned: starting and checking overlapped.
    assert min(t.status_changed_at for t in rows) < max(s.started_at for s in sessions)
    pids = [pid for t in rows for pid in (t.pid, *(processes.children(t.pid) or []))]

    services.stop_all(tunnels.all())
    wait_for(lambda: not tunnels.exclude(status=Status.STOPPED).exists(), timeout=60, message="all stopped")

    wait_gone(pids)
    assert set(tunnels.values_list("node", "pid", "consecutive_failures")) == {("", None, 0)}  # settled, released
    closed = sessions.exclude(ended_at=None).values_list("exit_reason", flat=True)
    assert list(closed) == [ExitReason.STOPPED_BY_USER] * MANY


@pytest.mark.django_db
def test_a_back_off_is_remembered_for_the_loop(staff, settings):
    settings.WORKER_RESYNC_SECONDS = 60
    data = {"name": "later", "remote_host": "u@127.0.0.1", "ssh_port": 1, "local_port": "20999", "remote_port": "80"}
    tunnel = services.create_tunnel(staff, data)
    Tunnel.objects.filter(pk=tunnel.pk).update(
        node="node-due",
        status=Status.BACKOFF,
        consecutive_failures=1,
        backoff_until=timezone.now() + timedelta(seconds=30),
    )
    reconciler = Reconciler("node-due")
    reconciler.reconcile_once(full=True)

    assert reconciler.tracked == {}  # nothing started before the back-off is over
    due = reconciler._due[tunnel.pk]
    assert 20 < due - time.monotonic() <= 30
    assert reconciler.next_due() <= due
    reconciler._next_heartbeat = reconciler._next_resync = due + 100  # with nothing sooner, the back-off is next
    assert reconciler.next_due() == due
