"""Bookkeeping: claims, observed-state writes, sessions, the heartbeat and the live-node rule."""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from tunnels.models import Desired, ExitReason, SshKey, Status, Tunnel, TunnelSession, WorkerNode
from tunnels.ssh import redact
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

# SshKey.last_used_at is written at most this often per key.
KEY_TOUCH_SECONDS = 60.0


# A session found open at the resync whose process this node no longer runs.
GONE_DETAIL = "the process was gone when the worker looked"
# How long (ms) the node's own writes wait for another SQLite writer's lock (busy_timeout is 10 s).
QUICK_WAIT_MS = 200


@contextmanager
def quick_writes() -> Iterator[None]:
    """On SQLite, writes inside wait at most ``QUICK_WAIT_MS`` for a lock instead of busy_timeout."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        (previous,) = cursor.fetchone()
        cursor.execute(f"PRAGMA busy_timeout = {int(QUICK_WAIT_MS)}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")


class Bookkeeping:
    """Reconciler mixin: what the worker writes to the database about tunnels, sessions and itself."""

    def heartbeat(self) -> None:
        """The node's lease, its node-level error, and history writes that failed earlier.

        A locked or unreachable database fails this quickly and quietly (the next pass retries):
        the tunnels' passes must not wait on the node's own bookkeeping.
        """
        self._tend()  # cheap, every pass: logs and connections once a second (tunnels.worker.resources)
        now = time.monotonic()
        due = now >= self._next_heartbeat or self._problems_changed
        if not (due or self.unclosed):
            return
        try:
            with quick_writes():
                self._flush_closes()
                if due:
                    self._beat(now)
        except DatabaseError as exc:
            logger.warning("heartbeat not written, retried next pass: %s", exc)

    def _beat(self, now: float) -> None:
        # Several beats per lease, but not a write every pass.
        self._next_heartbeat = now + min(1.0, settings.WORKER_LEASE_SECONDS / 4)
        problems = self.node_problems
        values = {
            "last_seen": timezone.now(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "error": "; ".join(sorted(problems))[:300],
            "error_since": min(problems.values()) if problems else None,
        }
        if not WorkerNode.objects.filter(name=self.node).update(**values):
            WorkerNode.objects.update_or_create(name=self.node, defaults={**values, "started_at": self._started_at})
        self._problems_changed = False
        self.erase_stale_prompts()  # answers left in the database: blanked within seconds (tunnels.prompts)

    # --- node-level problems (WorkerNode.error) -----------------------------------

    def node_problem(self, problem: str, active: bool) -> None:
        """Raise or clear a node-level problem; logged once per change, written with the next heartbeat."""
        problems = self.node_problems
        if active == (problem in problems):
            return
        if active:
            problems[problem] = timezone.now()
            logger.error("node %s: %s", self.node, problem)
        else:
            del problems[problem]
            logger.info("node %s: %s: resolved", self.node, problem)
        self._problems_changed = True

    def live_nodes(self) -> set[str]:
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
        return set(WorkerNode.objects.filter(last_seen__gte=cutoff).values_list("name", flat=True)) | {self.node}

    # --- claiming -----------------------------------------------------------

    def claim(self, tunnel: Tunnel, *, process_here: bool = False) -> bool:
        """Compare-and-swap the tunnel's node to ours; False if another node got there first.

        A tunnel the lost node ran says ``running`` until we start it (a start may wait for a slot):
        unless its process runs on this host (to be adopted), it is ``starting`` from the claim on.
        """
        previous = tunnel.node
        values: dict = {"node": self.node}
        if not process_here and tunnel.status == Status.RUNNING:
            values.update(status=Status.STARTING, status_changed_at=timezone.now(), pid=None, process_create_time=None)
        if Tunnel.objects.filter(pk=tunnel.pk, node=previous).update(**values) != 1:
            return False
        for name, value in values.items():
            setattr(tunnel, name, value)
        if previous and not process_here:
            # The lost node cannot end its sessions any more: one open session per running tunnel.
            TunnelSession.objects.filter(tunnel_uuid=tunnel.uuid, node=previous, ended_at=None).update(
                ended_at=timezone.now(),
                exit_reason=ExitReason.NODE_LOST,
                exit_detail=f"node {previous} stopped reporting; node {self.node} took the tunnel over",
            )
        logger.info("claimed tunnel %s (%s) from %s", tunnel.name, tunnel.uuid, previous or "no node")
        return True

    def _update(self, tunnel: Tunnel, **values) -> bool:
        """Write observed state, only while the tunnel is still ours."""
        if "status" in values and values["status"] != tunnel.status:
            values.setdefault("status_changed_at", timezone.now())
        updated = Tunnel.objects.filter(pk=tunnel.pk, node=self.node).update(**values) == 1
        if updated:
            for name, value in values.items():
                if not hasattr(value, "resolve_expression"):
                    setattr(tunnel, name, value)
        return updated

    def _settle_stopped(self, tunnel: Tunnel) -> None:
        values = {}
        # An interactive tunnel's failed login or ended master keeps saying so until it is started again.
        resting = tunnel.interactive and tunnel.status in (Status.FAILED, Status.NEEDS_AUTH)
        if tunnel.status != Status.STOPPED and not resting:
            values.update(status=Status.STOPPED, pid=None, process_create_time=None)
        if tunnel.backoff_until or tunnel.consecutive_failures:
            values.update(backoff_until=None, consecutive_failures=0)
        if values:
            self._update(tunnel, **values)
        # Release the claim so a stopped tunnel costs no node anything; any node may start it later.
        if Tunnel.objects.filter(pk=tunnel.pk, node=self.node, desired_state=Desired.STOPPED).update(node="") == 1:
            tunnel.node = ""

    def _open_session(self, tunnel: Tunnel, pid: int, when) -> TunnelSession:
        token = tunnel.desired_by_token
        return TunnelSession.objects.create(
            tunnel=tunnel,
            owner_id=tunnel.owner_id,
            tunnel_uuid=tunnel.uuid,
            name=tunnel.name,
            hash=tunnel.hash,
            direction=tunnel.direction,
            listen=tunnel.listen,
            node=self.node,
            pid=pid,
            started_at=when,
            requested_by_id=tunnel.desired_by_id,
            token=token,
            token_label=token.label if token is not None else "",
        )

    def _close_session(self, tracked: Tracked, reason: str, detail: str, *, ended_by=None) -> None:
        """Record the end of ``tracked``'s session; kept and retried every pass until written."""
        self._defer_close(tracked, reason, detail, ended_by=ended_by)
        self._flush_closes()

    def _defer_close(self, tracked: Tracked, reason: str, detail: str, *, ended_by=None) -> None:
        """Remember a session's end (with the time it ended) without writing it yet."""
        if tracked.session_id is not None:
            ended = {"ended_at": timezone.now(), "exit_reason": reason, "exit_detail": detail[:2000]}
            self.unclosed[tracked.session_id] = {**ended, "ended_by": ended_by}

    def flush_closes(self) -> None:
        """Write the session ends kept so far, waiting briefly at most for a locked database."""
        if not self.unclosed:
            return
        try:
            with quick_writes():
                self._flush_closes()
        except DatabaseError as exc:
            logger.warning("session ends not written yet, retried next pass: %s", exc)

    def _flush_closes(self) -> None:
        pending = self.unclosed
        for session_id, values in list(pending.items()):
            try:
                with transaction.atomic():  # a savepoint inside a caller's transaction: that one stays usable
                    TunnelSession.objects.filter(pk=session_id, ended_at=None).update(**values)
            except DatabaseError as exc:
                logger.warning("%d session ends not written yet, retried next pass: %s", len(pending), exc)
                return
            del pending[session_id]

    # --- history that repairs itself ------------------------------------------------

    def _repair_history(self, tunnels: list[Tunnel]) -> None:
        """At the resync: exactly one open session per process this node runs.

        Sessions of this node whose process is gone (a close lost with a crashed worker, a
        process that died unseen) are closed saying so; a process whose session row was never
        written (the database was down when it started) gets one, and its row its pid.
        """
        mine = {tracked.session_id for tracked in self.tracked.values()} | set(self.unclosed)
        mine |= {item.tracked.session_id for item in self._stopping}  # signalled, rows written when gone
        rows = TunnelSession.objects.filter(node=self.node, ended_at=None).values_list("id", flat=True)
        stale = [row for row in rows if row not in mine]
        if stale:
            TunnelSession.objects.filter(pk__in=stale, ended_at=None).update(
                ended_at=timezone.now(), exit_reason=ExitReason.GONE, exit_detail=GONE_DETAIL
            )
            logger.info("closed %d sessions whose process was gone", len(stale))
        for tunnel in tunnels:
            tracked = self.tracked.get(str(tunnel.uuid))
            if tracked is None or tunnel.node != self.node:
                continue
            if tracked.session_id is None:
                tracked.session_id = self._open_session(tunnel, tracked.pid, timezone.now()).id
            if tunnel.pid != tracked.pid:
                self._update(tunnel, pid=tracked.pid, process_create_time=tracked.create_time)

    def _record_error(self, tunnel: Tunnel, message: str, exc: BaseException | None = None) -> None:
        # The owner reads last_error: an exception's text may name server paths (the log has them in full).
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            self.disk_trouble(exc, f"tunnel {tunnel.uuid}")
            message = "the worker's data dir is full: no space for the tunnel's log (retried when there is)"
        try:
            self.fail(tunnel, self.tracked.get(str(tunnel.uuid)), redact(message), False)
        except Exception:
            logger.exception("tunnel %s: could not record the error", tunnel.uuid)

    # --- per-user keys (tunnels.agent) ------------------------------------------

    def _touch_key(self, tunnel: Tunnel) -> None:
        """The tunnel authenticated with its key: record it, at most once a minute per key."""
        if tunnel.ssh_key_id and self._key_touches.due(tunnel.ssh_key_id):
            SshKey.objects.filter(pk=tunnel.ssh_key_id).update(last_used_at=timezone.now())

    def _keep_failed(self, tunnel: Tunnel, tracked: Tracked | None, reason: str) -> None:
        """A precondition fails: no process, status failed with the reason, and no retries."""
        if tracked is not None:
            self.stop(tunnel, tracked, ExitReason.FAILED, reason)
        if tunnel.status != Status.FAILED or tunnel.last_error != reason:
            self._update(tunnel, status=Status.FAILED, last_error=reason, pid=None)
