"""The checks a configuration passes before it is saved: quotas, ports, network policy, the SSH key."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model

from tunnels import netpolicy, ports
from tunnels.models import (
    LOCAL_TO_REMOTE,
    SshKey,
    claimed_port,
)
from tunnels.validation import split_local
from tunnelsite.errors import InvalidInput, QuotaExceeded

# The fields the quota and network policy checks read (an update is checked with the merged values).
POLICY_FIELDS = ("local_port", "direction", "remote_host", "ssh_port")


# --- quotas -------------------------------------------------------------


def check_policy(owner, cleaned: dict[str, Any]) -> None:
    """Every 403 rule on a configuration: -L listens here, -R targets and SSH destinations in netpolicy."""
    check_quota(owner, cleaned)
    # A port left out is an -L port to be assigned (clean_tunnel_data requires an -R target),
    # which the target policy does not look at.
    netpolicy.check_tunnel(owner, {"local_port": "", **cleaned})


def check_quota(owner, cleaned: dict[str, Any]) -> None:
    """Per-user limits on where a tunnel may listen on this host (403). Staff are exempt.

    An -R tunnel's local_port is a connect target: ``tunnels.netpolicy`` decides those. Whether
    an -L port is free is the claim's business (409, ``tunnels.ports``).
    """
    if cleaned.get("direction") == LOCAL_TO_REMOTE or "local_port" not in cleaned:
        return  # -R, or a port to be assigned from the owner's range
    check_listen(owner, cleaned)


def check_listen(owner, cleaned: dict[str, Any]) -> None:
    """Where an -L tunnel may listen: loopback unless granted beyond it, a port in the owner's
    range (their own, else TUNNELSITE_PORT_RANGE) that is not reserved. Staff are exempt."""
    if owner.is_staff:
        return
    address, port = split_local(cleaned["local_port"])
    if not owner.allow_nonloopback_bind and address not in ("127.0.0.1", "::1"):
        raise QuotaExceeded(
            f"local address {address} is not allowed: your tunnels may only use the loopback address 127.0.0.1"
        )
    ports.check_allowed(owner, port)


def check_port_free(cleaned: dict[str, Any], tunnel_pk: int | None = None) -> None:
    """Refuse (409) an -L port another tunnel holds; for forms that check before saving."""
    if "local_port" in cleaned:
        ports.ensure_free(claimed_port(cleaned.get("direction", ""), cleaned["local_port"]), tunnel_pk)


def check_count(owner, count: int) -> None:
    if owner.is_staff:
        return
    limit = owner.effective_max_tunnels
    if count > limit:
        raise QuotaExceeded(f"tunnel limit reached: you may have at most {limit} tunnels (max_tunnels)")


def _lock_owner(owner) -> None:
    """Serialise configuration changes per owner (no-op on SQLite, which serialises writes)."""
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()


# --- SSH keys -----------------------------------------------------------

KEY_FIELD = "ssh_key"
NO_SUCH_KEY = "no such key"


def resolve_key(owner, value: Any, owned: dict[uuid.UUID, SshKey] | None = None) -> SshKey | None:
    """``owner``'s key with id ``value``; None for null. Another user's key and an unknown or
    malformed id get the same refusal, so the answer reveals nothing about other users' keys."""
    if value in (None, ""):
        return None
    key_id = value.pk if isinstance(value, SshKey) else value
    try:
        key_id = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(key_id) if isinstance(key_id, str) else None
    except ValueError:
        key_id = None
    if key_id is None:
        key = None
    elif owned is not None:
        key = owned.get(key_id)
    else:
        key = SshKey.objects.owned_by(owner).filter(pk=key_id).first()
    if key is None:
        raise InvalidInput(f"{KEY_FIELD}: {NO_SUCH_KEY}", {KEY_FIELD: [NO_SUCH_KEY]})
    return key


def _key_choice(owner, data: Any, owned: dict[uuid.UUID, SshKey] | None = None) -> dict[str, Any]:
    """``{"ssh_key_id": …}`` when the body names a key (or null), else nothing: an unsent key is kept."""
    if not isinstance(data, dict) or KEY_FIELD not in data:
        return {}
    key = resolve_key(owner, data[KEY_FIELD], owned)
    return {"ssh_key_id": key.pk if key else None}


def default_key_id(owner) -> uuid.UUID | None:
    """A new tunnel that names no key gets its owner's only key (clients of the original API
    cannot send one); with none or several, no key."""
    ids = list(SshKey.objects.owned_by(owner).values_list("pk", flat=True)[:2])
    return ids[0] if len(ids) == 1 else None
