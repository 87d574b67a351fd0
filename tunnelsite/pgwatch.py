"""A web request never hangs on a PostgreSQL server that stopped answering.

A server that is stopped or gone fails at once (connection refused or reset) or within
``connect_timeout``. One that hangs (SIGSTOP, a frozen VM, a full disk it is stuck on) keeps
its TCP connections open, and its kernel acknowledges what we send: libpq waits for an answer
forever, and neither ``statement_timeout`` (the server's own) nor TCP timeouts can end it.

So each request is timed here, in one watchdog thread per web process: a request still
running at its deadline has its database connection's socket shut down. The query it is
blocked in then fails at once with an OperationalError, which ``tunnelsite.faults`` answers as
``503 {"error", "retry_after"}``; the transaction is rolled back by the server when it wakes
up, so nothing half-done is kept. The deadline is ``settings.DB_REQUEST_LIMIT`` seconds after the
request arrived (``TUNNELSITE_DB_REQUEST_LIMIT``), or for a ``?wait=N`` request N s plus
``WAIT_MARGIN`` (``promise``). SQLite needs none of this: its waits are bounded by ``tunnelsite.dblocks``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger("tunnelsite.db")

WAIT_MARGIN = 1.0  # seconds past a ?wait=N promise before the database is given up on


def enabled() -> bool:
    return connections["default"].vendor == "postgresql"


class Watchdog:
    """Deadlines of running requests; cuts the database connection of any that passes its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, Any]] = {}  # token -> (deadline, Django connection)
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, wrapper: Any) -> int:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pgwatch", daemon=True)
                self._thread.start()
            token = next(self._tokens)
            self._armed[token] = (deadline, wrapper)
            self._cond.notify()
        return token

    def rearm(self, token: int, deadline: float) -> None:
        with self._cond:
            if token in self._armed:
                self._armed[token] = (deadline, self._armed[token][1])
                self._cond.notify()

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                late = [self._armed.pop(token)[1] for token in due]
                if not late:
                    soonest = min((deadline for deadline, _ in self._armed.values()), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                    continue
            for wrapper in late:
                cut(wrapper)


def cut(wrapper: Any) -> bool:
    """Shut down the socket of a Django connection's psycopg connection (from another thread:
    the blocked read returns at once). The descriptor stays the owner's to close."""
    raw = getattr(wrapper, "connection", None)
    try:
        fd = raw.pgconn.socket if raw is not None else -1
    except Exception:  # closed already, or not psycopg
        return False
    if fd < 0:
        return False
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)
        logger.warning("the database did not answer in time: connection cut (a request gets a 503)")
        return True
    return False


WATCHDOG = Watchdog()
_local = threading.local()  # this thread's request deadline (tunnelsite.postgresql bounds connects by it)


def time_left() -> float | None:
    """Seconds until the running request's deadline in this thread; None outside a request."""
    deadline = getattr(_local, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()


def promise(request: HttpRequest, seconds: float) -> None:
    """The request promised an answer within ``seconds`` (> 0) of its arrival: its deadline is
    then, plus ``WAIT_MARGIN`` (sooner or later than ``DB_REQUEST_LIMIT``: a wait of 30 s polls
    the database all along, each query quick)."""
    request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    token = request.__dict__.get("pgwatch_token")
    if token is None or seconds <= 0:
        return
    _local.deadline = request.pgwatch_started + seconds + WAIT_MARGIN
    WATCHDOG.rearm(token, _local.deadline)


class DatabaseWatchMiddleware:
    """Outermost of the middleware that touch the database, so the request-history row is timed too."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            return self.get_response(request)
        request.pgwatch_started = time.monotonic()
        _local.deadline = request.pgwatch_started + settings.DB_REQUEST_LIMIT
        # connections["default"] is this thread's own connection object, the one the request uses.
        request.pgwatch_token = WATCHDOG.arm(_local.deadline, connections["default"])
        try:
            return self.get_response(request)
        finally:
            WATCHDOG.disarm(request.pgwatch_token)
            _local.deadline = None
