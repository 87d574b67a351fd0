"""What every REST API v1 view shares: ``?wait=`` and other parameters.

Who sees which row is decided once, in ``tunnelsite.owned`` (applied to a
request by ``accounts.visibility``); views here only use it.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

from tunnelsite import dblocks, pgwatch
from tunnelsite.params import query_whole_number

WAIT_DEFAULT = 5.0
WAIT_MAX = 30.0
# Even a request that does not wait (wait=0) may wait this long for SQLite's write lock: the
# worker's writes usually let go within milliseconds.
MIN_LOCK_WAIT = 1.0


def wait_seconds(request, raw: str | None = None, default: float = WAIT_DEFAULT) -> float:
    """``?wait=`` (or ``raw``, where a body may carry it) as the compat API: seconds to wait for the
    worker; default 5, 0 = don't wait, capped.

    The promise counts from the request's arrival: from here on its writes wait for a locked
    database only until then (``tunnelsite.dblocks``), a hanging PostgreSQL is given up on soon
    after it (``tunnelsite.pgwatch``), and the view waits for the worker only for what is left
    (``time_left``)."""
    value = _parse_wait(request.query_params.get("wait") if raw is None else raw, default)
    dblocks.set_deadline(request, max(value, MIN_LOCK_WAIT))
    pgwatch.promise(request, value)  # a PostgreSQL server that hangs cannot hold it past its promise
    return value


def _parse_wait(raw: str | None, default: float) -> float:
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({"wait": ["must be a number of seconds, e.g. 5 or 0"]}) from None
    if not 0 <= value <= 3600:  # also refuses nan and inf
        raise ValidationError({"wait": ["must be from 0 to 3600 seconds"]})
    return min(value, WAIT_MAX)


def time_left(request, wait: float) -> float:
    """What is left of ``wait`` seconds counted from the request's arrival (a write that waited
    for a lock has used some of it)."""
    return dblocks.time_left(request, wait) if wait > 0 else 0.0


def positive_int(request, name: str, default: int, maximum: int) -> int:
    return min(query_whole_number(request, name, default, 1), maximum)


def flag(request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "yes")


WAIT_PARAM = OpenApiParameter(
    "wait",
    float,
    description=f"Seconds to wait for the worker to act (default {WAIT_DEFAULT:g}, 0 = don't wait, "
    f"at most {WAIT_MAX:g}). When the web process already has `TUNNELSITE_MAX_WAITING` requests waiting, "
    "the answer comes at once, as with 0.",
)
