"""What a client gets when something breaks: JSON on the API surfaces, never Django's HTML error page.

- The database does not answer (stopped, unreachable, out of disk, or SQLite's
  write lock held past the busy timeout): ``503 {"error", "retry_after"}`` with a
  ``Retry-After`` header. Nothing is wrong with the request; it may be sent again.
- Anything else unexpected: ``500 {"error": "internal error"}``. The traceback goes
  to the log, never to the client.

Three places catch errors, so every path is covered: ``tunnelsite.api.exception_handler``
(DRF views), ``FaultMiddleware.process_exception`` (plain Django views) and
``server_error``, the project's ``handler500``, which Django calls for errors raised
in middleware (request history, sessions) that no ``process_exception`` sees.
The sshreach-style calls keep their envelope; compat paths keep their CORS headers.
The dashboard and the admin keep HTML pages.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from tunnelsite import dblocks
from tunnelsite.paths import CALLS_PREFIX, add_cors, is_api_path, is_compat_path

logger = logging.getLogger("tunnelsite.faults")

RETRY_AFTER_LOCKED = 2  # seconds: another writer usually lets go soon
RETRY_AFTER_DOWN = 5
INTERNAL_ERROR = "internal error"
CALLS_SERVER_ERROR = 50  # the calls' error_code for a 500 or 503 (sshreach has none for server trouble)

# Outages as Django reports them, and as the drivers do where code talks to a raw connection.
OUTAGES: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
)
try:
    import psycopg

    OUTAGES += (psycopg.OperationalError, psycopg.InterfaceError)
except ImportError:  # SQLite-only installs
    pass


@dataclass(frozen=True)
class Fault:
    status: int
    error: str
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        extra = {} if self.retry_after is None else {"retry_after": self.retry_after}
        return {"error": self.error, **extra}

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


def database_fault(exc: BaseException | None) -> Fault | None:
    """A 503 when the database itself did not answer; None for anything else.

    Integrity and data errors are DatabaseErrors too, but they mean a bug or a race,
    not an outage: they stay 500s."""
    if not (isinstance(exc, OUTAGES) or type(exc) is DatabaseError):
        return None
    text = str(exc).lower()
    if "locked" in text:  # SQLite: another writer held the lock past busy_timeout
        return Fault(503, "database is busy: another writer holds its lock; try again", RETRY_AFTER_LOCKED)
    if "full" in text:  # "database or disk is full", "No space left on device"
        return Fault(503, "database cannot write: its disk is full", RETRY_AFTER_DOWN)
    return Fault(503, "database unavailable; try again", RETRY_AFTER_DOWN)


def fault_for(exc: BaseException | None) -> Fault:
    return database_fault(exc) or Fault(500, INTERNAL_ERROR)


def report(request: HttpRequest, exc: BaseException, fault: Fault) -> None:
    """One line for a database fault (an outage must not flood the log); the traceback for a bug.
    A database fault is noted on the request: its history row goes to the backlog without trying
    the database again (accounts.middleware)."""
    if fault.retry_after is not None:
        getattr(request, "_request", request).database_fault = True
        logger.warning("%s %s: %s (%s: %s)", request.method, request.path, fault.error, type(exc).__name__, exc)
    else:
        logger.error(
            "%s %s: unexpected error", request.method, request.path, exc_info=(type(exc), exc, exc.__traceback__)
        )


def json_fault(request: HttpRequest, fault: Fault) -> HttpResponse:
    path = request.path_info
    body = fault.body()
    if path.startswith(CALLS_PREFIX):
        body = {"message": fault.error, "error_code": CALLS_SERVER_ERROR, "success": False, **body}
        del body["error"]
    response = JsonResponse(body, status=fault.status, headers=fault.headers())
    return add_cors(response) if is_compat_path(path) else response


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p>{text}</p></body></html>"""


def html_fault(fault: Fault) -> HttpResponse:
    """The dashboard's and admin's page for a database fault: a plain page, because rendering a
    template may need the database (sessions, context processors) that just failed."""
    text = f"{fault.error} (try again in {fault.retry_after} s)."
    page = PAGE.format(title="Service unavailable", text=escape(text))
    return HttpResponse(page, status=fault.status, headers=fault.headers())


class FaultMiddleware:
    """Stamps each request's arrival (``?wait=`` deadlines count from it), bounds every request's
    SQLite lock waits (``tunnelsite.dblocks``: a dashboard or admin form under a long lock gets its
    503 page after the same ``WEB_LOCK_WAIT`` as the API), and turns a view's exception into JSON on
    the API surfaces."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.arrived_at = time.monotonic()
        dblocks.set_deadline(request, dblocks.WEB_LOCK_WAIT)
        with dblocks.limit_lock_waits(request):
            return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        fault = fault_for(exc)
        if is_api_path(request.path_info):
            report(request, exc, fault)
            return json_fault(request, fault)
        if fault.retry_after is not None:
            report(request, exc, fault)
            return html_fault(fault)
        return None  # Django logs it and shows its own 500 page


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: Django calls it inside its ``except`` block (and has logged the error),
    so the exception is still in ``sys.exc_info()``."""
    fault = fault_for(sys.exc_info()[1])
    if is_api_path(request.path_info):
        return json_fault(request, fault)
    if fault.retry_after is not None:
        return html_fault(fault)
    return defaults.server_error(request)
