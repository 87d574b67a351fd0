"""Ports on this host: which ports an -L tunnel may listen on, and who holds which.

A port is one listener whatever the address (127.0.0.1:P, [::1]:P, 0.0.0.0:P
and [::]:P all hold P), so claims are by port number, across all users, in
``Tunnel.listen_port`` (unique): the database decides when two ask at once.
The service layer calls these; README "Ports on this host" is the user's view.
"""

from __future__ import annotations

import itertools
import random

from django.conf import settings

from tunnels.models import Tunnel
from tunnelsite.errors import QuotaExceeded, ServiceError

LOCAL_PORT = "local_port"
# After a lost race, the next try picks at random among this many free ports.
RANDOM_AMONG = 64


class PortTaken(ServiceError):
    """Another tunnel holds the port. Never says whose: that would tell users about each other."""

    status = 409

    def __init__(self, port: int, message: str = "") -> None:
        message = message or f"local_port: port {port} is already taken by another tunnel on this host"
        message = f"{message}; choose another port"
        super().__init__(message, {LOCAL_PORT: [message]})
        self.port = port


class NoFreePort(ServiceError):
    status = 409


def is_reserved(port: int) -> bool:
    return any(low <= port <= high for low, high in settings.RESERVED_PORTS)


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def check_allowed(owner, port: int) -> None:
    """The policy half of an -L listen port: inside the owner's range and not reserved. Staff are exempt."""
    if owner.is_staff:
        return
    low, high = owner.port_range
    if not low <= port <= high:
        raise QuotaExceeded(
            f"local port {port} is outside your allowed range {low}-{high}; choose a port in it, "
            "or ask an administrator for a range of your own"
        )
    if is_reserved(port):
        raise QuotaExceeded(
            f"local port {port} is reserved on this host (TUNNELSITE_RESERVED_PORTS: "
            f"{_ranges_text(settings.RESERVED_PORTS)}, e.g. the web app and its database); choose another port"
        )


def is_taken(port: int, exclude_pk: int | None = None) -> bool:
    return Tunnel.objects.filter(listen_port=port).exclude(pk=exclude_pk).exists()


def ensure_free(port: int | None, exclude_pk: int | None = None) -> None:
    """Refuse a port another tunnel holds (a tunnel's own port is free for it)."""
    if port is not None and is_taken(port, exclude_pk):
        raise PortTaken(port)


def ensure_free_for(owner, ports: list[int]) -> None:
    """For a replace-all: ports held by other users' tunnels (``owner``'s own are replaced)."""
    taken = Tunnel.objects.filter(listen_port__in=ports).exclude(owner=owner).order_by("listen_port")
    port = taken.values_list("listen_port", flat=True).first()
    if port is not None:
        raise PortTaken(port)


def free_port(owner, *, first: bool = True) -> int:
    """A port of ``owner``'s range that no tunnel holds and that is not reserved (for staff too):
    the lowest, or (``first=False``, after losing one to a concurrent request) any, so that
    requests racing for ports stop colliding."""
    low, high = owner.port_range
    held = set(Tunnel.objects.filter(listen_port__range=(low, high)).values_list("listen_port", flat=True))
    free = (port for port in range(low, high + 1) if port not in held and not is_reserved(port))
    if first:
        port = next(free, None)
    else:
        candidates = list(itertools.islice(free, RANDOM_AMONG))
        port = random.choice(candidates) if candidates else None
    if port is None:
        raise NoFreePort(
            f"no free port left in your range {low}-{high}: every port in it is taken or reserved; "
            "delete a tunnel you no longer need, or ask an administrator for a wider range",
            {LOCAL_PORT: ["no free port left in your range"]},
        )
    return port
