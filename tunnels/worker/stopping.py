"""Stopping tunnel processes: one at a time when the next step needs the port, many together otherwise.

A stop the pass does not wait for (a stop request, a deleted or handed-over
tunnel, ``--stop-on-exit``) only signals the group and queues it; the queue is
awaited together, one grace period for all, when it reaches
``WORKER_STOP_CONCURRENCY`` and at the end of the pass. Status and session
rows are written after the processes are gone, in one transaction per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tunnels import processes
from tunnels.models import Desired, ExitReason, Status, Tunnel, TunnelSession
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")


@dataclass
class PendingStop:
    """A signalled group whose rows are written once it is gone."""

    key: str  # the tunnel's uuid
    tracked: Tracked
    tunnel: Tunnel | None  # None: only the session is closed (the row is gone or not ours)
    reason: str
    detail: str
    ended_by: object = None
    record: bool = True  # status stopped
    settle: bool = False  # then settled as not wanted (back-off cleared, claim released)

    @property
    def group(self) -> processes.Group:
        return processes.Group(self.tracked.pgid, self.tracked.pids(), self.tracked.popen)


class Stopping:
    """Reconciler mixin: stopping processes of ours, alone or in batches."""

    def stop(
        self,
        tunnel: Tunnel,
        tracked: Tracked,
        reason: str,
        detail: str = "",
        *,
        ended_by=None,
        record: bool = True,
        settle: bool = True,
    ) -> None:
        """Stop now and wait (the caller needs the port or the slot at once)."""
        key = str(tunnel.uuid)
        self.exit_master(tracked)  # an interactive tunnel's master: ``ssh -O exit``, the group kill after it
        processes.stop_group(tracked.pgid, tracked.pids(), tracked.popen, reap_orphans=self.reap_orphans)
        self.unwatch_tracked(tracked)
        self.login_over(tracked)
        self.tracked.pop(key, None)
        self._close_session(tracked, reason, detail, ended_by=ended_by)
        logger.info("stopped tunnel %s (%s) pid %s: %s", tunnel.name, key, tracked.pid, reason)
        if record and settle:
            self._update(tunnel, status=Status.STOPPED, pid=None, process_create_time=None)

    def stop_later(self, key: str, tunnel: Tunnel | None, tracked: Tracked, reason: str, detail: str, **how) -> None:
        """Signal now; wait with the others of this batch (``finish_stops``)."""
        self.tracked.pop(key, None)
        self.unwatch_tracked(tracked)  # its exit is awaited here, not reported as an event
        self.exit_master(tracked)
        self.login_over(tracked)
        item = PendingStop(key, tracked, tunnel, reason, detail, **how)
        processes.terminate_groups([item.group])
        self._stopping.append(item)
        if len(self._stopping) >= settings.WORKER_STOP_CONCURRENCY:
            self.finish_stops()

    def finish_stops(self) -> None:
        """Wait for every signalled group (SIGKILL after the shared grace period), then write their rows."""
        pending, self._stopping = self._stopping, []
        if not pending:
            return
        processes.await_groups([item.group for item in pending], reap_orphans=self.reap_orphans)
        for item in pending:
            name = item.tunnel.name if item.tunnel is not None else "-"
            logger.info("stopped tunnel %s (%s) pid %s: %s", name, item.key, item.tracked.pid, item.reason)
        # Kept first, so that ends this batch cannot write are retried every pass (Bookkeeping.flush_closes).
        for item in pending:
            self._defer_close(item.tracked, item.reason, item.detail, ended_by=item.ended_by)
        # A few statements per batch rather than three per tunnel: a stop-all of a thousand is bound by these.
        with transaction.atomic():
            self._close_sessions(pending)
            self._record_stopped([item.tunnel for item in pending if item.tunnel is not None and item.record])
            self._settle_many([item.tunnel for item in pending if item.tunnel is not None and item.settle])
        for item in pending:  # written (committed): nothing left to retry
            self.unclosed.pop(item.tracked.session_id, None)

    def _close_sessions(self, pending: list[PendingStop]) -> None:
        """Bookkeeping._close_session for a batch: one update per distinct outcome."""
        outcomes: dict[tuple, list] = {}
        for item in pending:
            if item.tracked.session_id is not None:
                outcome = (item.reason, item.detail[:2000], item.ended_by)
                outcomes.setdefault(outcome, []).append(item.tracked.session_id)
        now = timezone.now()
        for (reason, detail, ended_by), ids in outcomes.items():
            TunnelSession.objects.filter(pk__in=ids, ended_at=None).update(
                ended_at=now, exit_reason=reason, exit_detail=detail, ended_by=ended_by
            )

    def _record_stopped(self, tunnels: list[Tunnel]) -> None:
        """Bookkeeping._update(status=stopped) for a batch (only rows still ours)."""
        now = timezone.now()
        values = {"status": Status.STOPPED, "pid": None, "process_create_time": None}
        changed = [t.pk for t in tunnels if t.status != Status.STOPPED]
        Tunnel.objects.filter(pk__in=changed, node=self.node).update(**values, status_changed_at=now)
        Tunnel.objects.filter(pk__in=[t.pk for t in tunnels if t.pk not in changed], node=self.node).update(**values)
        for tunnel in tunnels:
            tunnel.status, tunnel.pid, tunnel.process_create_time = Status.STOPPED, None, None

    def _settle_many(self, tunnels: list[Tunnel]) -> None:
        """Bookkeeping._settle_stopped for a batch: retries forgotten, the claim released while still stopped."""
        if not tunnels:
            return
        ids = [t.pk for t in tunnels]
        Tunnel.objects.filter(pk__in=ids, node=self.node).exclude(backoff_until=None, consecutive_failures=0).update(
            backoff_until=None, consecutive_failures=0
        )
        Tunnel.objects.filter(pk__in=ids, node=self.node, desired_state=Desired.STOPPED).update(node="")

    # --- tunnels that are no longer ours --------------------------------------

    def _forget_unhandled(
        self, handled: set[str], found: dict[str, list[processes.Found]], live: set[str] | None, keys: set[str]
    ) -> None:
        """Stop processes of deleted tunnels and of tunnels another node now runs (of ``keys``, those
        the pass looked for and did not get)."""
        keys = keys - handled
        if not keys:
            return
        owners = {str(u): node for u, node in Tunnel.objects.filter(uuid__in=keys).values_list("uuid", "node")}
        if live is None and any(node not in ("", self.node) for node in owners.values()):
            live = self.live_nodes()
        strays: list[processes.Found] = []
        deleted = []
        for key in keys:
            node = owners.get(key)
            tracked = self.tracked.get(key)
            if node is None:
                reason, detail = ExitReason.DELETED, "the tunnel was deleted"
                deleted.append(key)
            elif node != self.node and node in (live or ()):
                if tracked is None and all(f.node != self.node for f in found.get(key, [])):
                    continue  # another live node's process on this host: not ours to touch
                reason, detail = ExitReason.HANDED_OVER, f"node {node} runs this tunnel now"
            else:
                reason, detail = ExitReason.GONE, "no node runs this tunnel"
            if tracked is not None:
                self.stop_later(key, None, tracked, reason, detail, record=False)
            strays += [f for f in found.get(key, []) if tracked is None or f.pid != tracked.pid]
            logger.info("tunnel %s: %s", key, detail)
        self._stop_found(strays, "processes of a tunnel this node does not run")
        self.finish_stops()
        if deleted:
            TunnelSession.objects.filter(tunnel_uuid__in=deleted, ended_at=None).update(
                ended_at=timezone.now(), exit_reason=ExitReason.DELETED, exit_detail="the tunnel was deleted"
            )

    # --- shutting down -------------------------------------------------------

    def stop_all(self) -> None:
        """--stop-on-exit: stop every tunnel this node runs, all at once (desired state is kept)."""
        if not self.tracked:
            return
        tunnels = {str(t.uuid): t for t in Tunnel.objects.filter(uuid__in=list(self.tracked))}
        for key, tracked in list(self.tracked.items()):
            tunnel = tunnels.get(key)
            self.stop_later(key, tunnel, tracked, ExitReason.WORKER_EXIT, "worker shut down with --stop-on-exit")
        self.finish_stops()
