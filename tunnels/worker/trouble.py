"""Passes that fail: back off with a cap, say so once per state change, leave a note for the operator.

When the database is unreachable or locked, every pass fails the same way. The
loop then retries after 0.25 s, 0.5 s, 1 s … at most 5 s, logs one line when the
trouble starts (or changes kind) and one when it ends, never a traceback per
pass. Once a write succeeds again the node's row says what happened
("database unreachable for 31 s (until 13:05:02 UTC)", ``error_since`` = when it
began) for ``NOTE_SECONDS``, so ``GET /api/v1/status`` and the admin show it; then
it is cleared. Any other unexpected error backs off the same way, with its
traceback logged once per distinct error.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from django.db import InterfaceError, OperationalError
from django.utils import timezone

logger = logging.getLogger("tunnelsite.worker")

BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
NOTE_SECONDS = 60.0


def classify(exc: BaseException) -> str:
    """What kind of trouble an exception from a pass means."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return "database locked"
        if "disk is full" in text or "no space" in text:
            return "database disk full"
        return "database unreachable"
    return "worker error"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:300]


class Trouble:
    """The state of the loop's passes: fine, or failing since when and how."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.kind: str | None = None
        self.since = 0.0  # monotonic
        self.since_wall: datetime | None = None
        self.delay = 0.0
        self.retry_at = 0.0
        self.note: str | None = None
        self.note_until: float | None = None
        self._logged: str | None = None

    @property
    def active(self) -> bool:
        return self.kind is not None

    @property
    def database(self) -> bool:
        return bool(self.kind and self.kind.startswith("database"))

    def failed(self, exc: BaseException) -> None:
        kind = classify(exc)
        now = time.monotonic()
        if self.kind is None:
            self.since, self.since_wall = now, timezone.now()
        if kind != self.kind:
            if kind == "worker error":
                logger.exception("worker pass failed (retrying with back-off)")
            else:
                logger.error("%s: %s", kind, first_line(exc))
            self._logged = first_line(exc)
        elif kind == "worker error" and first_line(exc) != self._logged:
            logger.exception("worker pass failed again, differently")
            self._logged = first_line(exc)
        self.kind = kind
        self.delay = BACKOFF_FIRST if self.delay == 0 else min(BACKOFF_MAX, self.delay * 2)
        self.retry_at = now + self.delay

    def recovered(self) -> None:
        """A pass succeeded: log the end of the trouble, leave its note, clear an old note when due."""
        if self.kind is None:
            self._clear_note_when_due()
            return
        seconds = time.monotonic() - self.since
        if self.database:
            logger.warning("database reachable again after %.1f s", seconds)
            self._leave_note(f"{self.kind} for {seconds:.0f} s (until {timezone.now():%H:%M:%S} UTC)")
        else:
            logger.info("worker passes succeed again after %.1f s", seconds)
        self.kind, self.delay, self._logged = None, 0.0, None

    def _leave_note(self, text: str) -> None:
        from tunnels.models import WorkerNode

        WorkerNode.objects.filter(name=self.node).update(error=text[:300], error_since=self.since_wall)
        self.note, self.note_until = text[:300], time.monotonic() + NOTE_SECONDS

    def _clear_note_when_due(self) -> None:
        if self.note_until is None or time.monotonic() < self.note_until:
            return
        from tunnels.models import WorkerNode

        # Only our own note: another problem recorded meanwhile (e.g. disk full) stays.
        WorkerNode.objects.filter(name=self.node, error=self.note).update(error="", error_since=None)
        self.note, self.note_until = None, None
