"""Request history: one ``ApiRequest`` row per API or compat request.

Recorded: time, user, token (id + label) or key label, auth method, method,
path (never the query string, which may carry secrets), status, duration,
client address, user agent. Never the body or any header holding a credential.
Cost: exactly one INSERT per recorded request, using ids already in memory; it never
makes the request wait for a locked or absent database (``accounts.request_log``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts import request_log
from tunnelsite.paths import is_api_path

logger = logging.getLogger("tunnelsite.requests")


# The anonymous health check is polled by load balancers every few seconds;
# recording it would bury real requests and cost a write per probe.
NOT_RECORDED = ("/api/v1/status", "/api/v1/status/")


def is_recorded(path: str) -> bool:
    if path in NOT_RECORDED:
        return False
    return is_api_path(path)


class RequestHistoryMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_recorded(request.path_info):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        duration_ms = (time.perf_counter() - started) * 1000
        try:
            # A request whose database connection was lost leaves its row to the backlog.
            later = getattr(request, "database_fault", False) and request_log.connection_lost()
            request_log.record(row_for(request, response.status_code, duration_ms), later=later)
        except Exception:  # history must never break the request it describes
            logger.exception("could not record request history for %s %s", request.method, request.path)
        return response


def row_for(request: HttpRequest, status: int, duration_ms: float) -> dict:
    info = getattr(request, "auth_info", None)
    # Only read a user that authentication already resolved: touching the lazy
    # session user here would cost queries on anonymous requests.
    user = request.__dict__.get("user")
    user_id = getattr(user, "pk", None) if info is not None else None
    return {
        "created_at": timezone.now(),  # the row may be written later (accounts.request_log)
        "user_id": user_id,
        "token_id": info.token_id if info else None,
        "token_label": (info.label if info else "")[:100],
        "auth_method": info.method if info else "",
        "method": (request.method or "")[:10],
        # PostgreSQL text cannot hold NUL; such requests are refused but still recorded.
        "path": request.path.replace("\x00", "")[:500],
        "status": status,
        "duration_ms": round(duration_ms, 3),
        "client_address": request.META.get("REMOTE_ADDR") or None,
        "user_agent": request.headers.get("User-Agent", "").replace("\x00", "")[:300],
    }
