"""Writing request-history rows without making the request wait for the database.

Design: **a short lock wait inline, and a backlog written off the request path.**
Each row is first INSERTed during the request with a lock wait of at most
``INLINE_LOCK_WAIT`` (SQLite; ``tunnelsite.dblocks``). When that fails (the database
is locked, stopped or unreachable) the row goes to this process's in-memory
backlog, and a background thread writes the backlog in batches once the database
answers again (retrying with back-off). While the backlog has rows, new rows join
it without trying inline: the request pays nothing and the order is kept. Rows
carry their own ``created_at`` (taken when the request ended), so late rows sort
where they belong.

What can be lost: the rows in the backlog when the web process dies without a
clean exit (SIGKILL, OOM, power loss) during database trouble, and rows beyond
``BACKLOG_LIMIT`` per process (counted and logged once per outage). A clean exit
(SIGTERM to gunicorn) tries one last flush. In normal operation the backlog is
empty and nothing can be lost.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from typing import Any

from django.db import DatabaseError, IntegrityError, close_old_connections, connection

from accounts.models import ApiRequest
from tunnelsite.dblocks import lock_wait

logger = logging.getLogger("tunnelsite.requests")

INLINE_LOCK_WAIT = 0.1  # seconds a request may wait for SQLite's write lock to record itself
FLUSH_LOCK_WAIT = 1.0  # the background writer is in no hurry
BACKLOG_LIMIT = 10_000  # rows per web process (~5 MB); beyond it rows are dropped and counted
BATCH = 500
RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between the writer's attempts while the database fails


class Backlog:
    """Rows that could not be written during their request, and the thread that writes them."""

    def __init__(self, limit: int = BACKLOG_LIMIT) -> None:
        self.limit = limit
        self._rows: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # rows taken for a write that has not finished
        self.dropped = 0

    def __len__(self) -> int:
        """Rows not written yet, those being written included."""
        with self._lock:
            return len(self._rows) + self._in_flight

    def add(self, row: dict[str, Any]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # Started on first use, not at import: gunicorn forks its workers after importing.
                self._thread = threading.Thread(target=self._run, name="request-history", daemon=True)
                self._thread.start()
            if len(self._rows) < self.limit:
                self._rows.append(row)
            else:
                self.dropped += 1
                if self.dropped == 1:
                    logger.error("request history backlog full (%d rows): dropping rows until it drains", self.limit)
        self._wake.set()

    def flush(self, lock_seconds: float = FLUSH_LOCK_WAIT) -> bool:
        """Write everything queued, a batch at a time; False (rows kept) when the database fails."""
        while True:
            with self._lock:
                batch = [self._rows.popleft() for _ in range(min(BATCH, len(self._rows)))]
                self._in_flight = len(batch)
            if not batch:
                return True
            try:
                with lock_wait(lock_seconds):
                    _insert(batch)
            except DatabaseError as exc:
                with self._lock:
                    self._rows.extendleft(reversed(batch))
                    self._in_flight = 0
                logger.debug("request history backlog: %d rows wait (%s)", len(self), exc)
                return False
            except Exception:  # a bug, not the database: retrying would fail the same way
                logger.exception("request history: %d rows could not be written and are dropped", len(batch))
            with self._lock:
                self._in_flight = 0
            self._drained()

    def _drained(self) -> None:
        with self._lock:
            if self._rows or not self.dropped:
                return
            logger.warning("request history backlog written; %d rows were dropped while it was full", self.dropped)
            self.dropped = 0

    def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            self._wake.wait()
            self._wake.clear()
            close_old_connections()
            if self.flush():
                delay = RETRY_MIN
                connection.close()  # this thread's own connection; idle until the next outage
                continue
            connection.close()  # a failed connection is not reused
            self._wake.wait(delay)  # a new row does not cut the back-off short...
            self._wake.set()  # ...but the next round runs either way
            delay = min(delay * 2, RETRY_MAX)


def _insert(batch: list[dict[str, Any]]) -> None:
    try:
        ApiRequest.objects.bulk_create([ApiRequest(**row) for row in batch])
    except IntegrityError:
        # A user or token deleted while its rows waited: keep the rows, without the dangling link.
        for row in batch:
            try:
                ApiRequest.objects.create(**row)
            except IntegrityError:
                ApiRequest.objects.create(**{**row, "user_id": None, "token_id": None})


BACKLOG = Backlog()


def connection_lost() -> bool:
    """This thread's database connection failed to open or broke (cut by tunnelsite.pgwatch, reset
    by the server): writing the row now would mean a new connection, seconds against a server
    that hangs."""
    raw = connection.connection
    return raw is None or bool(getattr(raw, "broken", False))


def record(row: dict[str, Any], *, later: bool = False) -> None:
    """Write one request's row now if the database lets us at once, else leave it to the backlog
    (at once with ``later``)."""
    if later or len(BACKLOG):
        BACKLOG.add(row)
        return
    try:
        with lock_wait(INLINE_LOCK_WAIT):
            ApiRequest.objects.create(**row)
    except DatabaseError as exc:
        logger.warning("request history: database did not take the row (%s); written later", exc)
        BACKLOG.add(row)


@atexit.register
def _last_flush() -> None:
    if len(BACKLOG):
        try:
            BACKLOG.flush(lock_seconds=2.0)
        except Exception:  # interpreter shutdown: nothing more to do
            logger.exception("request history: %d rows lost at exit", len(BACKLOG))
