"""Waiting for the worker to act on a request, and saying truthfully what became of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max
from django.utils import timezone

from tunnels import prompts, waiting
from tunnels.models import (
    Status,
    Tunnel,
    WorkerNode,
)
from tunnelsite.faults import database_fault

# --- waiting for the worker ---------------------------------------------

# A node silent for longer than its lease loses its tunnels to other nodes, but a waiting request
# only says "no worker is running" once no node has reported for the lease plus this grace: a
# worker that was busy for a moment, or that is coming back after the database returned, has not
# written its heartbeat for a while although it is about to act.
WORKER_GRACE = 60.0
# ... and only after having looked for this long (or its whole wait, if shorter), so a worker that
# is just writing its first heartbeat again gets one more check.
WORKER_CHANCE = 1.0


def live_workers():
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
    return WorkerNode.objects.filter(last_seen__gte=cutoff)


def node_problems() -> list[dict]:
    """What live workers report going wrong on their node (``WorkerNode.error``), oldest first."""
    rows = live_workers().exclude(error="").order_by("error_since", "name")
    return [{"node": n, "error": e, "since": since} for n, e, since in rows.values_list("name", "error", "error_since")]


@dataclass(frozen=True)
class Heartbeat:
    """The newest heartbeat of any node, as a waiting request judges it."""

    age: float | None  # seconds; None: no node has ever reported

    @property
    def gone(self) -> bool:
        """No worker to wait for: none reported within the lease plus ``WORKER_GRACE``."""
        return self.age is None or self.age > settings.WORKER_LEASE_SECONDS + WORKER_GRACE

    @property
    def late(self) -> bool:
        """Past the lease, still within the grace: a busy or returning worker."""
        return self.age is not None and not self.gone and self.age > settings.WORKER_LEASE_SECONDS


def newest_heartbeat() -> Heartbeat:
    newest = WorkerNode.objects.aggregate(newest=Max("last_seen"))["newest"]  # indexed (last_seen)
    return Heartbeat(None if newest is None else (timezone.now() - newest).total_seconds())


def no_worker(heartbeat: Heartbeat, waited: float, timeout: float) -> bool:
    """Whether a wait that has run ``waited`` of its ``timeout`` seconds may answer "no worker"."""
    return heartbeat.gone and waited >= min(timeout, WORKER_CHANCE)


@dataclass(frozen=True)
class Outcome:
    """What became of a start or stop request: ``done``, ``failed``, ``prompt`` (an interactive tunnel's
    ssh asks a question a person must answer) or ``queued`` (not confirmed yet), with the one line every
    API surface shows (``started, pid 123``, ``stopped``, ``failed: …``, ``needs answer: …``, ``queued: …``).
    ``waited`` is False when the answer came without waiting (``wait=0``, or no free waiting slot)."""

    state: str
    text: str
    waited: bool = False

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def queued(self) -> bool:
        return self.state == "queued"


def where_to_answer(tunnel: Tunnel) -> str:
    """Where a person answers ``tunnel``'s login prompt (REST and dashboard), in one phrase."""
    return f"answer it at /api/v1/tunnels/{tunnel.uuid}/prompt/ or on /tunnels/{tunnel.uuid}/"


def _outcome(tunnel: Tunnel, want_running: bool) -> Outcome | None:
    """The outcome once the worker has acted on the request, else None."""
    acted = tunnel.status_changed_at >= tunnel.desired_changed_at
    if want_running:
        if tunnel.status == Status.RUNNING and tunnel.running_generation == tunnel.generation:
            return Outcome("done", f"started, pid {tunnel.pid}")
        if tunnel.status in (Status.FAILED, Status.BACKOFF, Status.NEEDS_AUTH) and acted:
            return Outcome("failed", f"failed: {tunnel.last_error or _NO_REASON[tunnel.status]}")
        if tunnel.interactive:
            # The start cannot go on until a person answers: waiting longer only wastes their prompt's time.
            # (request_start forgot every earlier prompt, so a pending one belongs to this attempt.)
            asked = prompts.pending(tunnel)
            if asked is not None:
                return Outcome("prompt", f"needs answer: {asked.prompt.strip()} ({where_to_answer(tunnel)})")
        return None
    if tunnel.status == Status.STOPPED:
        return Outcome("done", "stopped")
    return None


_NO_REASON = {
    Status.FAILED: "see the tunnel log",
    Status.BACKOFF: "see the tunnel log",
    Status.NEEDS_AUTH: "the login ended; start it again and answer its prompt",
}


def wait_for_outcome(tunnel: Tunnel, want_running: bool, timeout: float) -> Outcome:
    """Wait up to ``timeout`` seconds for the worker to act; say truthfully what happened.

    Only ``settings.MAX_WAITING`` requests of this process wait at once (``tunnels.waiting``);
    beyond that the answer is given at once, exactly as with ``timeout=0``. ``tunnel`` is
    re-read from the database (callers show it afterwards)."""
    return _wait([tunnel], want_running, timeout, whole_row=True)[0]


def wait_for_outcomes(tunnels: list[Tunnel], want_running: bool, timeout: float) -> list[Outcome]:
    """``wait_for_outcome`` for several tunnels (start all, stop all): one waiting slot for the
    request and one query per poll for all of them, however many there are."""
    return _wait(tunnels, want_running, timeout, whole_row=False) if tunnels else []


def _wait(tunnels: list[Tunnel], want_running: bool, timeout: float, *, whole_row: bool) -> list[Outcome]:
    if timeout <= 0:
        return _poll(tunnels, want_running, 0.0, whole_row)
    with waiting.SLOTS.slot() as held:
        outcomes = _poll(tunnels, want_running, timeout if held else 0.0, whole_row)
        return [replace(outcome, waited=held) for outcome in outcomes]


WAIT_POLL = 0.05  # seconds between reads of the tunnel rows while waiting
WORKER_CHECK = 1.0  # seconds between checks that some worker is alive
# What ``_outcome`` reads: the columns a bulk wait re-reads for every poll.
OUTCOME_FIELDS = ("status", "status_changed_at", "desired_changed_at", "generation", "running_generation", "pid")


def _refresh(tunnels: list[Tunnel], whole_row: bool) -> None:
    if whole_row:
        for tunnel in tunnels:
            tunnel.refresh_from_db()
        return
    rows = Tunnel.objects.filter(pk__in=[t.pk for t in tunnels]).values("pk", "last_error", *OUTCOME_FIELDS)
    fresh = {row.pop("pk"): row for row in rows}
    for tunnel in tunnels:
        # A tunnel deleted meanwhile keeps its last values (and ends up "queued").
        for field, value in fresh.get(tunnel.pk, {}).items():
            setattr(tunnel, field, value)


DATABASE_AWAY = "queued: the database stopped answering while waiting"


def _poll(tunnels: list[Tunnel], want_running: bool, timeout: float, whole_row: bool) -> list[Outcome]:
    outcomes: dict[int, Outcome] = {}
    try:
        return _watch(tunnels, want_running, timeout, whole_row, outcomes)
    except DatabaseError as exc:
        if database_fault(exc) is None:
            raise
        # The request itself was recorded before the wait: only the worker's answer cannot be read.
        return [outcomes.get(t.pk) or Outcome("queued", DATABASE_AWAY) for t in tunnels]


def _watch(
    tunnels: list[Tunnel], want_running: bool, timeout: float, whole_row: bool, outcomes: dict[int, Outcome]
) -> list[Outcome]:
    # Cost per waiting request: one read of the pending rows per WAIT_POLL plus one indexed
    # heartbeat query per WORKER_CHECK, for at most WAIT_MAX seconds.
    started = time.monotonic()
    next_worker_check = started
    heartbeat = None
    while True:
        pending = [t for t in tunnels if t.pk not in outcomes]
        _refresh(pending, whole_row)
        for tunnel in pending:
            outcome = _outcome(tunnel, want_running)
            if outcome:
                outcomes[tunnel.pk] = outcome
        if len(outcomes) == len(tunnels):
            return [outcomes[t.pk] for t in tunnels]
        now = time.monotonic()
        at_deadline = now >= started + timeout
        if now >= next_worker_check or at_deadline:
            heartbeat = newest_heartbeat()
            if no_worker(heartbeat, now - started, timeout):
                return [outcomes.get(t.pk) or Outcome("queued", "queued: no worker is running") for t in tunnels]
            next_worker_check = now + WORKER_CHECK
        if at_deadline:
            return [outcomes.get(t.pk) or _unconfirmed(t, want_running, heartbeat) for t in tunnels]
        time.sleep(min(WAIT_POLL, max(0.0, started + timeout - now)))


def _unconfirmed(tunnel: Tunnel, want_running: bool, heartbeat: Heartbeat | None) -> Outcome:
    verb = "starting" if want_running else "stopping"
    text = f"queued: {verb}, worker has not confirmed yet (status {tunnel.status}"
    if heartbeat is not None and heartbeat.late:
        text += f"; last worker heartbeat {heartbeat.age:.0f} s ago"
    return Outcome("queued", text + ")")
