"""How long a web request may wait for SQLite's write lock.

SQLite has one writer at a time; a writer that finds the lock taken waits up to
the connection's ``busy_timeout`` (10 s, ``tunnelsite.env.database_config``)
and then fails with "database is locked". That wait is right for ordinary
writes, which usually get the lock within milliseconds, but two kinds of write
must not sit it out:

- best-effort bookkeeping (the request-history row, a token's ``last_used_at``):
  ``lock_wait(seconds)`` shortens the wait around it;
- web requests (API, dashboard, admin): ``limit_lock_waits`` installs a query wrapper that caps each
  statement's wait at the time the request has left before its deadline:
  ``WEB_LOCK_WAIT`` after it arrived, or sooner when it promised to answer within
  ``?wait=N`` seconds (``set_deadline``).

PostgreSQL needs none of this here: the web's writes do not queue behind
another writer's lock for long, and a stopped server fails at once. There,
both helpers do nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connection
from django.db.backends.signals import connection_created
from django.dispatch import receiver
from django.http import HttpRequest

logger = logging.getLogger("tunnelsite.db")

MIN_LOCK_WAIT = 0.05  # seconds: past a deadline a write still gets one short try
# Every web request waits at most this long for the write lock (less when ``?wait=`` asks for less):
# a lock held longer is not the worker's short writes but trouble, and a request that sat it out
# would hold a web thread for the full 10 s busy timeout. It answers 503 with retry_after instead.
WEB_LOCK_WAIT = 5.0
STEP_MS = 100  # a deadline's wait is set in steps, so most requests set it once

# Per thread (Django's connections are per thread): the caps of the ``lock_wait`` blocks entered,
# and which busy timeout its connection has now (None: the configured one), so it is set only on change.
_local = threading.local()


@receiver(connection_created)
def _new_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    _local.state = None  # a new connection starts with its configured busy timeout


def _is_sqlite() -> bool:
    return connection.vendor == "sqlite"


def _default_ms() -> int:
    # The connection's own setting ("timeout" option, seconds), as sqlite3.connect applied it.
    return int(float(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5)) * 1000)


def _sync(deadline: float | None = None) -> None:
    """Set the busy timeout this thread's connection should have now, if it is not set already."""
    limits = list(getattr(_local, "caps", []))
    if deadline is not None:
        left_ms = int(max(deadline - time.monotonic(), MIN_LOCK_WAIT) * 1000)
        limits.append(max(left_ms // STEP_MS * STEP_MS, int(MIN_LOCK_WAIT * 1000)))
    want = min(limits) if limits else _default_ms()
    connection.ensure_connection()
    current = getattr(_local, "state", None)
    if (_default_ms() if current is None else current) != want:
        # On the raw connection: through Django's cursor the PRAGMA would pass the wrapper again.
        connection.connection.execute(f"PRAGMA busy_timeout = {want}")
        _local.state = want


@contextmanager
def lock_wait(seconds: float) -> Iterator[None]:
    """Statements inside wait at most ``seconds`` for SQLite's write lock (then "database is locked")."""
    if not _is_sqlite():
        yield
        return
    caps = _local.__dict__.setdefault("caps", [])
    caps.append(int(seconds * 1000))
    try:
        _sync()
        yield
    finally:
        caps.pop()
        if connection.connection is not None:  # closed after an error: a new one starts with the default
            _sync()


@contextmanager
def best_effort(seconds: float = 0.1) -> Iterator[None]:
    """For a write the request can do without (a token's ``last_used_at``): a short lock wait,
    and a database error skips it instead of failing the request."""
    try:
        with lock_wait(seconds):
            yield
    except DatabaseError as exc:
        logger.info("skipped a bookkeeping write: %s", exc)


def write_locked() -> bool:
    """Whether another connection holds SQLite's write lock right now (False on PostgreSQL, or when
    this connection is inside a transaction and cannot ask). Takes and drops the lock at once if free."""
    if not _is_sqlite() or connection.in_atomic_block:
        return False
    with lock_wait(0):
        try:
            connection.connection.execute("BEGIN IMMEDIATE")
        except connection.Database.OperationalError:  # the raw connection raises sqlite3's own
            return True
        connection.connection.execute("ROLLBACK")
    return False


def set_deadline(request: HttpRequest, seconds: float) -> None:
    """From now on this request's writes wait for the lock at most until ``seconds`` after it
    arrived (never later than the ``WEB_LOCK_WAIT`` every web request starts with)."""
    request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    arrived = getattr(request, "arrived_at", None) or time.monotonic()
    deadline = arrived + max(seconds, MIN_LOCK_WAIT)
    current = request.__dict__.get("lock_deadline")
    request.lock_deadline = deadline if current is None else min(current, deadline)


def time_left(request: HttpRequest, seconds: float) -> float:
    """Of ``seconds`` counted from the request's arrival, what is left now (never negative)."""
    arrived = getattr(request, "arrived_at", None) or time.monotonic()
    return max(0.0, arrived + seconds - time.monotonic())


@contextmanager
def limit_lock_waits(request: HttpRequest) -> Iterator[None]:
    """Around a request: every statement waits for the lock at most until ``request.lock_deadline``."""
    if not _is_sqlite():
        yield
        return

    def wrapper(execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        _sync(request.__dict__.get("lock_deadline"))
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(wrapper):
            yield
    finally:
        if connection.connection is not None:
            _sync()
