"""The reconciler: make the running tunnel processes match the desired state.

Two process kinds share it: autossh (which runs ssh) for key tunnels, and one foreground ssh
control master per interactive tunnel, whose login is answered by a person (tunnels.worker.logins).

``Reconciler(node).reconcile_once()`` is one pass, of one of three kinds:

* idle (nothing needs attention): a heartbeat and one read of the change marker;
* busy: only the tunnels that need attention (tunnels.worker.attention) — starting
  ones that can have moved on, exited ones, back-offs that are due and queued
  starts — read by primary key, with no process scan;
* full, when the marker moved, at the resync or when a peer's lease runs
  out: one process scan and one query for every tunnel this node runs or may claim.

Per tunnel the pass builds a ``View`` (tunnels.worker.acting), asks
``decide`` (tunnels.worker.decide) for the next step and carries it out.
Starts are bounded per pass (``WORKER_START_BATCH``) and by the tunnels still
authenticating (``WORKER_MAX_STARTUPS``); the rest are queued for the next
passes, so starting and checking overlap. ``next_due()`` (tunnels.worker.attention)
tells the loop when the next pass is wanted.

Only this package (through ``tunnels.processes``) starts or stops processes.
Observed state is written with ``filter(pk=..., node=me).update(...)``: a
row count of 0 means another node took the tunnel, and our copy is stopped.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q
from django.utils import timezone

from tunnels import processes, services
from tunnels.agent import Agent
from tunnels.models import Desired, Status, Tunnel
from tunnels.preflight_runner import PreflightRunner
from tunnels.worker import outage
from tunnels.worker.acting import Acting, Step
from tunnels.worker.attention import Attention
from tunnels.worker.bookkeeping import KEY_TOUCH_SECONDS, Bookkeeping
from tunnels.worker.decide import Action, decide
from tunnels.worker.exits import ExitEvents, ExitWatch
from tunnels.worker.health import Health
from tunnels.worker.hostfiles import Every, HostFiles
from tunnels.worker.lifecycle import Lifecycle
from tunnels.worker.logins import Logins
from tunnels.worker.resources import Resources
from tunnels.worker.stopping import PendingStop, Stopping
from tunnels.worker.tracked import TrackedTable

logger = logging.getLogger("tunnelsite.worker")

# A peer's tunnels are claimable once its lease ran out; look just after that.
LEASE_MARGIN = 0.05
# Decisions per tunnel and pass: the longest chain is claim, adopt, stop strays, reap, disable, settle.
MAX_STEPS = 8
RELATED = ("owner", "desired_by_token", "ssh_key")


# Tunnels at rest: stopped, or an interactive tunnel whose login ended (failed, needs_auth) and that
# nobody asked to start again. No node claims them.
AT_REST = Q(status=Status.STOPPED) | Q(
    interactive=True, desired_state=Desired.STOPPED, status__in=[Status.FAILED, Status.NEEDS_AUTH]
)


class Reconciler(Attention, ExitEvents, Bookkeeping, Acting, Lifecycle, Logins, Stopping, Health, Resources):
    def __init__(self, node: str | None = None, *, reap_orphans: bool = False) -> None:
        self.node = node or settings.NODE_NAME
        self.reap_orphans = reap_orphans
        self.scanner = processes.Scanner()
        self.tracked = TrackedTable()  # uuid -> Tracked
        self.exits = ExitWatch()  # pidfds of the processes it runs (tunnels.worker.exits)
        self._marker: int | None = None
        self.check_marker = True  # the loop clears it between notifications (tunnels.worker.wake)
        self._next_resync = 0.0
        self._next_heartbeat = 0.0
        self._wake_at: float | None = None
        self._started_at = timezone.now()
        # Per-user keys: this node's ssh-agent (tunnels.agent); started when a key is first needed.
        self.agent = Agent(node=self.node)
        self._key_touches = Every(KEY_TOUCH_SECONDS)
        self.host_files = HostFiles()  # the owners' known_hosts, synchronised once per full pass
        # Connection tests run in their own threads; their keys go through this agent.
        self.preflights = PreflightRunner(self.node, agent=self.agent)
        self._changed_hosts: dict[tuple[int, str, int], str] | None = None  # per full pass (tunnels.hostkeys)
        # Attention between passes: starts waiting for a slot (pk → counts as a restart), back-offs (pk → when).
        self._queued: dict[int, bool] = {}
        self._due: dict[int, float] = {}
        self._peer_expiry: float | None = None
        self._stopping: list[PendingStop] = []
        self._adoptable: dict[tuple[int, int], object] | None = None  # open sessions by (tunnel, pid), per full pass
        self._last_pass = 0.0
        # Health and history under faults (tunnels.worker.health, .bookkeeping, .resources, .outage).
        self.probes = outage.Probes()
        self.unclosed: dict = {}  # session ends not written yet (database trouble), retried every pass
        self.node_problems: dict = {}  # node-level problems ("disk full: data dir") and when each began
        self._problems_changed = False
        self._next_log_check = 0.0
        self._log_files: dict[str, str] = {}  # tunnel uuid -> its log's path (tunnels.worker.resources)
        self._begin_pass()

    # --- the pass ---------------------------------------------------------

    def reconcile_once(self, *, full: bool = False) -> bool:
        """One pass; returns True when it was a full pass. (The loop closes stale connections first.)"""
        self.heartbeat()
        marker = services.marker_value() if self.check_marker else self._marker
        now = time.monotonic()
        self.collect_exits()  # exit events (pidfds): no poll of every process
        moved = marker != self._marker
        resync = now >= self._next_resync
        lapsed = self._peer_expiry is not None and now >= self._peer_expiry
        if full or moved or resync or lapsed:
            self._marker = marker
            if resync:
                self._next_resync = now + settings.WORKER_RESYNC_SECONDS
            self.full_pass(read_logs=resync or full, sync_keys=resync or full)
        else:
            ids = self._attention(now)
            if ids:
                self.busy_pass(ids)
        self.exits_handled()
        if moved or resync or self.preflights.wants_pass:
            self._poll_preflights()
        return full or moved or resync or lapsed

    def _poll_preflights(self) -> None:
        # Requests bump the marker, so tests are looked for only when it moved (and at resync).
        try:
            self.preflights.poll()
        except DatabaseError:
            raise  # database trouble: the loop backs off and says so once (tunnels.worker.trouble)
        except Exception:  # connection tests must never stop the tunnels
            logger.exception("connection tests: unexpected error")

    def full_pass(self, *, read_logs: bool = True, sync_keys: bool = False) -> None:
        self._begin_pass()
        # Host keys change in the web through paths that move the marker (tunnels.hostkeys): what the
        # busy passes in between know of them is read again here.
        self._changed_hosts = None
        self.host_files.forget()
        try:
            live = self._live_nodes()
            found = self.scanner.scan()
            self.prefetch_sessions(found)
            mine_or_claimable = Q(node=self.node) | (~Q(node__in=live) & (Q(desired_state=Desired.RUNNING) | ~AT_REST))
            tunnels = list(Tunnel.objects.select_related(*RELATED).filter(mine_or_claimable))
            handled: set[str] = set()
            for tunnel in tunnels:
                step = Step(found=found.get(str(tunnel.uuid), []), live=live, read_logs=read_logs)
                self._visit(tunnel, step, handled)
            self._forget_unhandled(handled, found, live, set(self.tracked) | set(found))
            self._forget_attention({t.pk for t in tunnels})
            if sync_keys:
                self.check_masters(tunnels)  # ``ssh -O check``, at most once a minute per master
                self._sync_agent(tunnels)
                self._bound_logs(tunnels)
                self._repair_history(tunnels)
        finally:
            self._end_pass()

    def busy_pass(self, ids: set[int]) -> None:
        """The tunnels that need attention, by primary key: no scan, no query of every tunnel."""
        self._begin_pass()
        try:
            tunnels = list(Tunnel.objects.select_related(*RELATED).filter(pk__in=ids, node=self.node))
            tunnels.sort(key=lambda t: str(t.uuid) not in self.tracked)  # checks first: they free start slots
            handled: set[str] = set()
            for tunnel in tunnels:
                self._visit(tunnel, Step(read_logs=False), handled)
            expected = {key for key, tracked in self.tracked.items() if tracked.tunnel_id in ids}
            self._forget_unhandled(handled, {}, None, expected)
            self._forget_attention({t.pk for t in tunnels}, among=ids)
        finally:
            self._end_pass()

    def _begin_pass(self) -> None:
        self._listening: dict[int, set[int]] | None = None
        self._starts_left = settings.WORKER_START_BATCH
        self._authenticating = self._count_authenticating()
        self._recounted = False

    def _end_pass(self) -> None:
        self.finish_stops()
        self._adoptable = None
        self.flush_closes()  # history after the restarts (tunnels.worker.bookkeeping)
        self._last_pass = time.monotonic()

    def listening_table(self) -> dict[int, set[int]]:
        """The machine's listening TCP sockets, read at most once per pass (tunnels.processes)."""
        if self._listening is None:
            self._listening = processes.listening_sockets()
        return self._listening

    def _live_nodes(self) -> set[str]:
        """Nodes with a lease (services' rule), and when the first peer's lease runs out."""
        rows = list(services.live_workers().values_list("name", "last_seen"))
        wall, now = timezone.now(), time.monotonic()
        lease = settings.WORKER_LEASE_SECONDS + LEASE_MARGIN
        expiries = [now + (seen - wall).total_seconds() + lease for name, seen in rows if name != self.node]
        self._peer_expiry = min(expiries) if expiries else None
        return {name for name, _ in rows} | {self.node}

    # --- one tunnel ---------------------------------------------------------

    def _visit(self, tunnel: Tunnel, step: Step, handled: set[str]) -> None:
        key = str(tunnel.uuid)
        try:
            if self.reconcile_tunnel(tunnel, step):
                handled.add(key)
        except DatabaseError:
            raise  # the node's trouble, not the tunnel's: never its last_error (the loop backs off)
        except Exception as exc:  # one bad tunnel must not stop the others
            logger.exception("tunnel %s: unexpected error", key)
            if tunnel.node == self.node:
                handled.add(key)
                self._record_error(tunnel, f"worker error: {exc.__class__.__name__}: {exc}", exc)
                self._schedule(tunnel)

    def reconcile_tunnel(self, tunnel: Tunnel, found: Step | list[processes.Found], *, read_logs: bool = True) -> bool:
        """Decide and act until the tunnel settles for this pass; False when another node has it."""
        step = found if isinstance(found, Step) else Step(found=list(found), read_logs=read_logs)
        tracked = self.tracked.get(str(tunnel.uuid))
        if tracked is not None and step.found:
            mine = next((f for f in step.found if not f.orphan and f.pid == tracked.pid), None)
            tracked.ssh_pids = mine.ssh_pids if mine else []
            self.watch_tracked(tracked)
        for _ in range(MAX_STEPS):
            decision = decide(self.view(tunnel, step))
            if decision.action is not Action.CHECK:
                logger.debug("tunnel %s: %s (%s)", tunnel.uuid, decision.action, decision.reason)
            if not self.act(tunnel, decision, step):
                break
        else:
            logger.error("tunnel %s: still deciding after %d steps", tunnel.uuid, MAX_STEPS)
        self._schedule(tunnel)
        return not step.lost
