"""Desired state (start, stop, restart) and finding a tunnel by its hash prefix."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tunnels import prompts
from tunnels.models import (
    Desired,
    Status,
    Tunnel,
)
from tunnels.services.base import SYSTEM, Actor, NotRunnable, bump_marker
from tunnelsite.errors import InvalidInput, ServiceError

MIN_PREFIX = 8


# --- desired state ------------------------------------------------------


def _set_desired(tunnels: Iterable[Tunnel], state: str, actor: Actor) -> int:
    ids = [t.pk for t in tunnels]
    if not ids:
        return 0
    values = {
        "desired_state": state,
        "desired_changed_at": timezone.now(),
        "desired_by": actor.user if getattr(actor.user, "pk", None) else None,
        "desired_by_token": actor.token,
    }
    if state == Desired.RUNNING:
        # An explicit start retries at once, whatever back-off the worker chose, and counts
        # failures afresh (a held port clash, tunnels.retries, is tried again).
        values["backoff_until"] = None
        values["consecutive_failures"] = 0
    with transaction.atomic():
        count = Tunnel.objects.filter(pk__in=ids).update(**values)
        bump_marker()
    return count


INTERACTIVE_ELSEWHERE = (
    "tunnel {name} is interactive: start it from the REST API (POST /api/v1/tunnels/{id}/start/, then answer "
    "its login prompt at /api/v1/tunnels/{id}/prompt/) or from its page in the dashboard (/tunnels/{id}/)"
)


def check_runnable(tunnel: Tunnel, *, interactive_ok: bool = True) -> None:
    """Refuse a start the worker cannot carry out. An interactive tunnel starts only where a person
    can answer its prompt (REST, dashboard, admin); surfaces without one pass ``interactive_ok=False``."""
    if tunnel.interactive and not interactive_ok:
        raise NotRunnable(INTERACTIVE_ELSEWHERE.format(name=tunnel.name, id=tunnel.uuid))
    if not tunnel.holds_its_port:
        raise NotRunnable(
            f"tunnel {tunnel.name} cannot start: another tunnel on this host holds its port "
            f"({tunnel.local_port}); change its local_port first"
        )


def request_start(
    tunnel: Tunnel, actor: Actor = SYSTEM, *, responses: list[str] | None = None, interactive_ok: bool = True
) -> None:
    """Ask the worker to run ``tunnel``. For an interactive tunnel this begins a new login (any earlier
    prompt is forgotten); ``responses`` are answers to its prompts given up front, in order."""
    check_runnable(tunnel, interactive_ok=interactive_ok)
    if responses is not None:
        responses = prompts.check_responses(responses)
        if responses and not tunnel.interactive:
            raise InvalidInput(
                "responses are for interactive tunnels only", {"responses": ["this tunnel is not interactive"]}
            )
    with transaction.atomic():
        if tunnel.interactive:
            prompts.preload(tunnel, responses)
            if tunnel.pid is None or tunnel.status != Status.RUNNING:
                # Not running (never started, stopped, its login ended, or a login under way): a new
                # generation is a new attempt, which the worker tells from one whose login already ended
                # (and a login under way is replaced: its question was just forgotten by preload).
                Tunnel.objects.filter(pk=tunnel.pk).update(generation=F("generation") + 1)
        _set_desired([tunnel], Desired.RUNNING, actor)
    tunnel.refresh_from_db()


def request_stop(tunnel: Tunnel, actor: Actor = SYSTEM) -> None:
    _set_desired([tunnel], Desired.STOPPED, actor)
    tunnel.refresh_from_db()


def request_restart(tunnel: Tunnel, actor: Actor = SYSTEM, *, interactive_ok: bool = True) -> None:
    """Restart: a new generation makes the worker replace the process (an interactive tunnel logs in again)."""
    check_runnable(tunnel, interactive_ok=interactive_ok)
    with transaction.atomic():
        if tunnel.interactive:
            prompts.preload(tunnel, None)
        Tunnel.objects.filter(pk=tunnel.pk).update(generation=F("generation") + 1)
        _set_desired([tunnel], Desired.RUNNING, actor)
    tunnel.refresh_from_db()


def start_all(queryset, actor: Actor = SYSTEM) -> tuple[list[Tunnel], list[Tunnel]]:
    """Start every tunnel the worker can run; returns (started, skipped: interactive, or without its port)."""
    tunnels = list(queryset)
    runnable = [t for t in tunnels if not t.interactive and t.holds_its_port]
    _set_desired(runnable, Desired.RUNNING, actor)
    return runnable, [t for t in tunnels if t.interactive or not t.holds_its_port]


def stop_all(queryset, actor: Actor = SYSTEM) -> list[Tunnel]:
    tunnels = list(queryset)
    _set_desired(tunnels, Desired.STOPPED, actor)
    return tunnels


def set_auto_restart(tunnel: Tunnel, allow: bool) -> None:
    Tunnel.objects.filter(pk=tunnel.pk).update(auto_restart=allow)
    bump_marker()
    tunnel.refresh_from_db()


# --- lookups ------------------------------------------------------------


class HashPrefixError(ServiceError):
    pass


def resolve_prefix(queryset, prefix: str) -> Tunnel:
    """Find the one tunnel in ``queryset`` whose hash starts with ``prefix`` (COMPAT.md)."""
    if len(prefix) < MIN_PREFIX:
        raise HashPrefixError(f"Hash prefix too short (minimum {MIN_PREFIX} characters, got {len(prefix)})")
    matches = list(queryset.filter(hash__startswith=prefix.lower())[:50])
    if not matches:
        error = HashPrefixError(f"No tunnel found with hash prefix: {prefix}")
        error.status = 404
        raise error
    if len(matches) > 1:
        listing = "\n".join(f"  {t.hash}" for t in matches)
        raise HashPrefixError(
            f"Ambiguous hash prefix '{prefix}' matches {len(matches)} tunnels:\n{listing}\n"
            "Please use more characters to uniquely identify the tunnel."
        )
    return matches[0]
