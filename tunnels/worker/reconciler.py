"""The reconciler: make the running autossh processes match the desired state.

``Reconciler(node).reconcile_once()`` is one pass. It is cheap when nothing
changed (a heartbeat, one read of the change marker, a liveness check of the
processes it knows); a full pass (one psutil scan, one query for the tunnels
this node runs or may claim) happens when the marker moved, a process died, a
tunnel is starting or due for a retry, or the resync interval elapsed.

Only this module (through ``tunnels.processes``, in tunnels.worker.lifecycle) starts or stops processes.
Observed state is written with ``filter(pk=..., node=me).update(...)``: a
row count of 0 means another node took the tunnel, and our copy is stopped.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from tunnels import processes, retries, services
from tunnels.agent import Agent
from tunnels.models import Desired, ExitReason, Status, Tunnel
from tunnels.preflight_runner import PreflightRunner
from tunnels.worker.bookkeeping import Bookkeeping
from tunnels.worker.decide import precondition_error
from tunnels.worker.health import Health
from tunnels.worker.lifecycle import Lifecycle
from tunnels.worker.resources import Resources
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")


class Reconciler(Bookkeeping, Lifecycle, Health, Resources):
    def __init__(self, node: str | None = None, *, reap_orphans: bool = False) -> None:
        self.node = node or settings.NODE_NAME
        self.reap_orphans = reap_orphans
        self.scanner = processes.Scanner()
        self.tracked: dict[str, Tracked] = {}
        self._marker: int | None = None
        self._next_resync = 0.0
        self._next_heartbeat = 0.0
        self._wake_at: float | None = None
        self._started_at = timezone.now()
        # Per-user keys: this node's ssh-agent (tunnels.agent); started when a key is first needed.
        self.agent = Agent(node=self.node)
        self._key_touched: dict = {}
        # Connection tests run in their own threads; their keys go through this agent.
        self.preflights = PreflightRunner(self.node, agent=self.agent)
        self._changed_hosts: dict[tuple[int, str, int], str] | None = None  # per full pass (tunnels.hostkeys)

    # --- the pass ---------------------------------------------------------

    def reconcile_once(self, *, full: bool = False) -> bool:
        """One pass; returns True when it was a full pass. (The command closes stale connections first.)"""
        self.heartbeat()
        marker = services.marker_value()
        now = time.monotonic()
        died = self._reap_and_check()
        moved = marker != self._marker
        due = (
            full
            or died
            or moved
            or now >= self._next_resync
            or any(not tr.healthy for tr in self.tracked.values())
            or (self._wake_at is not None and now >= self._wake_at)
            or self.preflights.wants_pass
        )
        if not due:
            return False
        resync = now >= self._next_resync
        self._marker = marker
        if resync:
            self._next_resync = now + settings.WORKER_RESYNC_SECONDS
        self.full_pass(read_logs=resync or died or full, sync_keys=resync or full)
        if moved or resync or self.preflights.wants_pass:
            self._poll_preflights()
        return True

    def _poll_preflights(self) -> None:
        # Requests bump the marker, so tests are looked for only when it moved (and at resync).
        try:
            self.preflights.poll()
        except Exception:  # connection tests must never stop the tunnels
            logger.exception("connection tests: unexpected error")

    @property
    def busy(self) -> bool:
        """A tunnel is starting: worth looking again sooner than the interval."""
        return any(not tr.healthy for tr in self.tracked.values())

    def _reap_and_check(self) -> bool:
        if self.reap_orphans:
            processes.reap(orphans=True)
        return any(not tr.alive() for tr in self.tracked.values())

    def full_pass(self, *, read_logs: bool = True, sync_keys: bool = False) -> None:
        live = self.live_nodes()
        found = self.scanner.scan()
        mine_or_claimable = Q(node=self.node) | (
            ~Q(node__in=live) & (Q(desired_state=Desired.RUNNING) | ~Q(status=Status.STOPPED))
        )
        tunnels = list(Tunnel.objects.select_related("owner", "desired_by_token", "ssh_key").filter(mine_or_claimable))
        self._wake_at = None
        self._changed_hosts = None
        handled: set[str] = set()
        for tunnel in tunnels:
            key = str(tunnel.uuid)
            try:
                if tunnel.node != self.node and not self.claim(tunnel):
                    continue
                handled.add(key)
                self.reconcile_tunnel(tunnel, found.get(key, []), read_logs=read_logs)
            except Exception as exc:  # one bad tunnel must not stop the others
                logger.exception("tunnel %s: unexpected error", key)
                self._record_error(tunnel, f"worker error: {exc.__class__.__name__}: {exc}")
        self._forget_unhandled(handled, found, live)
        if sync_keys:
            self._sync_agent(tunnels)
            self._bound_logs(tunnels)

    # --- one tunnel ---------------------------------------------------------

    def reconcile_tunnel(self, tunnel: Tunnel, found: list[processes.Found], *, read_logs: bool = True) -> None:
        key = str(tunnel.uuid)
        tracked = self.tracked.get(key)
        groups = [f for f in found if not f.orphan]
        if tracked is None and groups:
            tracked = self.adopt(tunnel, groups[0])
        if tracked is not None:
            self._stop_strays(tunnel, tracked, found)
            mine = next((f for f in groups if f.pid == tracked.pid), None)
            tracked.ssh_pids = mine.ssh_pids if mine else []
            if not tracked.alive():
                if not self.on_exit(tunnel, tracked, found):
                    return
                tracked = None
        elif found:
            self._stop_found(found, "leftover processes of a tunnel that is not running")

        wanted = tunnel.desired_state == Desired.RUNNING
        problem = precondition_error(tunnel) if wanted else None
        if problem:
            # Only a configuration change fixes it: checked every pass, no retries, no back-off.
            self._keep_failed(tunnel, tracked, problem)
            return
        host_key_changed = self._host_key_block(tunnel, wanted)
        if host_key_changed:
            self._keep_failed(tunnel, tracked, host_key_changed)
            return
        if not wanted:
            if tracked is not None:
                self.stop(tunnel, tracked, ExitReason.STOPPED_BY_USER, "stop requested", ended_by=tunnel.desired_by)
            self._settle_stopped(tunnel)
            return
        if tracked is not None and tracked.generation != tunnel.generation:
            self.stop(tunnel, tracked, ExitReason.CONFIG_CHANGED, f"configuration generation {tunnel.generation}")
            tracked = None
        if tracked is not None:
            self.check(tunnel, tracked, read_logs=read_logs)
            return
        if tunnel.backoff_until and tunnel.backoff_until > timezone.now():
            wait = (tunnel.backoff_until - timezone.now()).total_seconds()
            wake = time.monotonic() + wait
            self._wake_at = wake if self._wake_at is None else min(self._wake_at, wake)
            return
        if retries.held(tunnel):
            return  # a port clash gave up: only a start request or a new configuration retries
        self.start(tunnel, restart=tunnel.consecutive_failures > 0)
