"""When the worker stops retrying a tunnel whose port is taken (pure decisions on plain values).

A tunnel that keeps failing with "address already in use" would otherwise be
retried forever and win the port the moment its holder restarts (another
user's clients would then reach this tunnel's server). After
``PORT_CLASH_TRIES`` failures in a row, the last one a clash, it is *held*:
status ``failed``, no retry scheduled (``backoff_until`` empty), until

- it is started again (the service layer resets ``consecutive_failures``), or
- its configuration changes (a new ``generation``; the worker counts afresh).

The hold lives in existing columns, so every node reads the same decision.
"""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

# The first words of the clash messages in tunnels.reconciler.FAILURES (ssh -L on this host).
CLASH_PREFIX = "address already in use"


def is_port_clash(reason: str) -> bool:
    return reason.startswith(CLASH_PREFIX)


def gives_up(reason: str, failures: int) -> bool:
    """True when this failure (the ``failures``-th in a row) should hold the tunnel."""
    return is_port_clash(reason) and failures >= settings.PORT_CLASH_TRIES


def held_reason(reason: str, failures: int) -> str:
    return (
        f"{reason} (gave up after {failures} tries in a row; "
        "start the tunnel again or change its configuration to retry)"
    )


class RetryState(Protocol):
    """The columns the decision reads (a Tunnel, or any object with them)."""

    status: str
    backoff_until: object
    consecutive_failures: int
    generation: int
    running_generation: int | None


def held(tunnel: RetryState) -> bool:
    """True while a held tunnel must not be started (see the module docstring)."""
    return (
        tunnel.status == "failed"
        and tunnel.backoff_until is None
        and tunnel.consecutive_failures >= settings.PORT_CLASH_TRIES
        and tunnel.running_generation == tunnel.generation
    )
