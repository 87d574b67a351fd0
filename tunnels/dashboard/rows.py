"""Table rows of the tunnels page: what each column shows, computed once per tunnel from its own fields."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tunnels.dashboard import status
from tunnels.models import Tunnel
from tunnels.models.tunnel import REMOTE_TO_LOCAL

# The direction as users know it from ssh; the API's names are confusing on their own.
FLAGS = {REMOTE_TO_LOCAL: "-L"}
DIRECTION_WORDS = {REMOTE_TO_LOCAL: "local forward"}


@dataclass(frozen=True)
class Row:
    tunnel: Tunnel
    flag: str
    direction: str
    target: str
    badge: status.Badge
    uptime: str
    prompt_pending: bool = False


def flag(direction: str) -> str:
    return FLAGS.get(direction, "-R")


def direction_words(direction: str) -> str:
    return DIRECTION_WORDS.get(direction, "remote forward")


def target(tunnel: Tunnel) -> str:
    """Where connections end up: -L reaches ``remote_port`` from the SSH server, -R this host's ``local_port``."""
    if tunnel.direction == REMOTE_TO_LOCAL:
        return f"{tunnel.remote_port} via {tunnel.remote_host}"
    return f"{tunnel.local_port} on this host, via {tunnel.remote_host}"


def row(tunnel: Tunnel, now: datetime, prompt_pending: bool = False) -> Row:
    """``prompt_pending``: the tunnel's ssh asks a login question now (callers look it up for all rows at once)."""
    return Row(
        tunnel=tunnel,
        flag=flag(tunnel.direction),
        direction=direction_words(tunnel.direction),
        target=target(tunnel),
        badge=status.badge(tunnel.status, tunnel.desired_state, tunnel.last_error, tunnel.interactive, prompt_pending),
        prompt_pending=prompt_pending,
        uptime=status.uptime(tunnel.status, tunnel.started_at, now),
    )
