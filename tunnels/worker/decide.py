"""Decisions without side effects: what a tunnel's row and state call for."""

from __future__ import annotations

from tunnels import netpolicy
from tunnels.models import Tunnel
from tunnels.ssh import NO_KEY_ERROR

INTERACTIVE_ERROR = (
    "interactive tunnels need a person to answer ssh's prompts; the worker never starts them "
    "(start it from a terminal, or set interactive to false and use key authentication)"
)
# SshKey.last_used_at is written at most this often per key.


def precondition_error(tunnel: Tunnel) -> str | None:
    """Why ``tunnel`` cannot run as configured (a pure check of its row), or None."""
    if tunnel.interactive:
        return INTERACTIVE_ERROR
    refused = netpolicy.row_problem(tunnel)  # the row may predate the policy, or a grant was withdrawn
    if refused:
        return refused
    if tunnel.ssh_key_id is None:
        # Never the server's key for a user's tunnel: it would reach every server that trusts it.
        return None if tunnel.owner.is_staff else NO_KEY_ERROR
    if tunnel.ssh_key.is_expired():
        return f"SSH key {tunnel.ssh_key.name!r} has expired: attach another key or renew it"
    return None
