"""Moving a tunnel to another owner (the admin's owner field).

A tunnel that changes hands must pass every rule a new tunnel of the new owner
passes: their tunnel limit, their listen range and network grants, and their
configuration hashes. The SSH key is the one thing that cannot follow: a key
belongs to one user, so a tunnel that uses the old owner's key is refused until
a key of the new owner (or none) is chosen with the move. Both owners'
configurations are backed up, and the generation goes up so a running process
is replaced and its next session is recorded under the new owner.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from tunnels.models import SshKey, Tunnel
from tunnels.services import (
    KEY_FIELD,
    POLICY_FIELDS,
    SYSTEM,
    Actor,
    _ensure_unique,
    _lock_owner,
    bump_marker,
    check_count,
    check_policy,
    resolve_key,
    snapshot,
)
from tunnelsite.errors import InvalidInput

KEEP = object()  # change_owner's ssh_key default: keep the tunnel's current key
OLD_OWNERS_KEY = "this key belongs to the old owner: choose one of the new owner's keys, or none"


def _new_key(tunnel: Tunnel, new_owner, ssh_key: Any) -> SshKey | None:
    """The key the moved tunnel uses: ``ssh_key`` (an id, a key or None) resolved among the new
    owner's keys; with KEEP, the current key, which must then be the new owner's."""
    value = tunnel.ssh_key_id if ssh_key is KEEP else ssh_key
    try:
        return resolve_key(new_owner, value)
    except InvalidInput:
        chosen = value.pk if isinstance(value, SshKey) else value
        if ssh_key is KEEP or str(chosen) == str(tunnel.ssh_key_id):
            raise InvalidInput(f"{KEY_FIELD}: {OLD_OWNERS_KEY}", {KEY_FIELD: [OLD_OWNERS_KEY]}) from None
        raise


def check_owner_change(tunnel: Tunnel, new_owner, ssh_key: Any = KEEP) -> SshKey | None:
    """Refuse (with the service error the API would give) a move ``change_owner`` would refuse.
    Read-only: forms call it to show the problem before saving. Returns the key to use."""
    key = _new_key(tunnel, new_owner, ssh_key)
    check_policy(new_owner, {field: getattr(tunnel, field) for field in POLICY_FIELDS})
    check_count(new_owner, Tunnel.objects.owned_by(new_owner).exclude(pk=tunnel.pk).count() + 1)
    _ensure_unique(new_owner, tunnel.hash, exclude_pk=tunnel.pk)
    return key


def change_owner(tunnel: Tunnel, new_owner, actor: Actor = SYSTEM, *, ssh_key: Any = KEEP) -> Tunnel:
    """Move ``tunnel`` to ``new_owner`` (see the module docstring). The listen port claim stays
    with the tunnel row, so the port is not released and re-taken on the way."""
    if tunnel.owner_id == new_owner.pk:
        return tunnel
    with transaction.atomic():
        # Both owners' configurations change: lock them in a fixed order (no deadlock with a
        # concurrent move the other way).
        for owner in sorted((tunnel.owner, new_owner), key=lambda user: user.pk):
            _lock_owner(owner)
        tunnel = Tunnel.objects.select_for_update().select_related("owner").get(pk=tunnel.pk)
        key = check_owner_change(tunnel, new_owner, ssh_key)
        old_owner = tunnel.owner
        snapshot(old_owner, f"before moving {tunnel.name} to {new_owner.username}", actor)
        snapshot(new_owner, f"before taking {tunnel.name} from {old_owner.username}", actor)
        tunnel.owner = new_owner
        tunnel.ssh_key = key
        tunnel.generation += 1  # a running process is replaced: it runs as the new owner's tunnel
        tunnel.save()
        bump_marker()
    return tunnel
