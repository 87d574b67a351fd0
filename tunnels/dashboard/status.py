"""How a tunnel's state reads on the dashboard: a badge word, its colour and the reason behind it.

A pure function of the row's fields, so the table, the fragment the table polls
and the tunnel page all say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tunnels.models import Desired, Status

ATTENTION = "needs attention"
LOGIN_PROMPT = "login prompt"
NEEDS_LOGIN = "needs login"


@dataclass(frozen=True)
class Badge:
    word: str  # running / starting / backoff / failed / stopped / needs attention
    css: str  # the badge-<css> class
    reason: str  # last error or why it is not running; "" when nothing to say


def badge(status: str, desired: str, last_error: str, interactive: bool = False, prompt_pending: bool = False) -> Badge:
    """``needs attention``: the worker holds a tunnel down that should run (e.g. a changed host key), or a
    stopped tunnel has an error the user has not seen the end of. ``login prompt``: an interactive
    tunnel's ssh is asking a question now; ``needs login``: its login ended (not restarted by itself)."""
    if prompt_pending:
        return Badge(LOGIN_PROMPT, "attention", "ssh is asking for a login: answer it on the tunnel's page.")
    if status == Status.NEEDS_AUTH:
        reason = last_error or "The login ended."
        return Badge(NEEDS_LOGIN, "attention", f"{reason} Start and log in again (it is not restarted by itself).")
    if status == Status.STOPPED:
        if desired == Desired.RUNNING and interactive:
            return Badge("starting", "starting", last_error or "Waiting for a worker to start its login.")
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
