"""How a tunnel's state reads on the dashboard: a badge word, its colour and the reason behind it.

A pure function of the row's fields, so the table, the fragment the table polls
and the tunnel page all say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tunnels.models import Desired, Status

ATTENTION = "needs attention"


@dataclass(frozen=True)
class Badge:
    word: str  # running / starting / backoff / failed / stopped / needs attention
    css: str  # the badge-<css> class
    reason: str  # last error or why it is not running; "" when nothing to say


def badge(status: str, desired: str, last_error: str, interactive: bool = False) -> Badge:
    """``needs attention``: the worker holds a tunnel down that should run (e.g. a changed host key, an
    interactive login), or a stopped tunnel has an error the user has not seen the end of."""
    if status == Status.STOPPED:
        if desired == Desired.RUNNING and interactive:
            return Badge(ATTENTION, "attention", last_error or "Interactive: needs a person to log in.")
        if last_error:
            return Badge(ATTENTION, "attention", last_error)
        if desired == Desired.RUNNING:
            return Badge("starting", "starting", "Waiting for a worker to start it.")
        return Badge("stopped", "stopped", "")
    return Badge(str(status), str(status), last_error)


def uptime(status: str, started_at: datetime | None, now: datetime) -> str:
    """``3d 4h``, ``2h 05m``, ``4m 12s``; empty unless running."""
    if status != Status.RUNNING or started_at is None:
        return ""
    seconds = max(0, int((now - started_at) / timedelta(seconds=1)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"
