"""What a user may do, as they see it: the one reading of their quotas and network grants.

``/api/v1/users/me/`` and the dashboard's account page both show these.
"""

from __future__ import annotations

from typing import Any


def quotas(user) -> dict[str, Any]:
    return {
        "max_tunnels": None if user.is_staff else user.effective_max_tunnels,
        "local_port_min": user.port_range[0],
        "local_port_max": user.port_range[1],
        "allow_nonloopback_bind": user.is_staff or user.allow_nonloopback_bind,
    }


def network(user) -> dict[str, Any]:
    return {
        "allow_nonloopback_target": user.is_staff or user.allow_nonloopback_target,
        "allowed_targets": rule_lines(user.allowed_targets),
        "ssh_destinations": rule_lines(user.ssh_destinations),
        "policy_exempt": user.is_staff,
    }


def rule_lines(text: str) -> list[str]:
    """A grant field's rules, one per line, without blank and comment-only lines."""
    return [line.strip() for line in (text or "").splitlines() if line.partition("#")[0].strip()]
