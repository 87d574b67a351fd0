"""Configuration changes: create, update, delete, replace-all and restore, each backed up first."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from tunnels import backups, logfiles, ports
from tunnels.models import (
    ConfigBackup,
    Desired,
    SshKey,
    Tunnel,
    claimed_port,
)
from tunnels.ports import NoFreePort, PortTaken
from tunnels.services.base import SYSTEM, Actor, DuplicateTunnel, _invalid, bump_marker
from tunnels.services.checks import (
    KEY_FIELD,
    POLICY_FIELDS,
    _key_choice,
    _lock_owner,
    check_count,
    check_policy,
    default_key_id,
)
from tunnels.services.desired import request_start
from tunnels.validation import HASH_FIELDS, REQUIRED, TunnelDataError, clean_tunnel_data
from tunnelsite.errors import InvalidInput
from tunnelsite.files import atomic_write

# Tries at a free port for a tunnel that left local_port out; each lost race re-reads the claims.
ASSIGN_ATTEMPTS = 10


# --- backups ------------------------------------------------------------


def snapshot(owner, reason: str, actor: Actor = SYSTEM) -> ConfigBackup:
    """Back up ``owner``'s configuration: a ConfigBackup row and a timestamped file."""
    tunnels = [t.backup_dict() for t in Tunnel.objects.owned_by(owner).order_by("created_at", "id")]
    now = timezone.now()
    backup_id = uuid.uuid4()
    # Microseconds plus a slice of the id: two backups in one second never collide.
    file_name = f"user-{owner.pk}/tunnels-{now:%Y%m%dT%H%M%S.%fZ}-{backup_id.hex[:8]}.json"
    body = {"owner": owner.username, "created_at": now.isoformat(), "reason": reason, "tunnels": tunnels}
    atomic_write(backups_dir() / file_name, json.dumps(body, indent=2, ensure_ascii=False).encode())
    backup = ConfigBackup.objects.create(
        id=backup_id,
        owner=owner,
        created_at=now,
        reason=reason[:200],
        actor=actor.user if getattr(actor.user, "pk", None) else None,
        tunnels=tunnels,
        file_name=file_name,
    )
    backups.prune(owner.pk, limit=backups.PRUNE_BATCH)  # old ones go as new ones come (bounded work)
    return backup


def backups_dir():
    return backups.directory()


def _drop_logs(uuids: list) -> None:
    """Once the deletion commits, the deleted tunnels' logs go too (they would count for nobody's cap)."""
    paths = [logfiles.path_for(u) for u in uuids]
    transaction.on_commit(lambda: logfiles.remove_all(paths))


# --- configuration changes ----------------------------------------------


def _config_changed(tunnel: Tunnel, cleaned: dict[str, Any]) -> bool:
    return any(getattr(tunnel, field) != value for field, value in cleaned.items() if field != "auto_restart")


def _save_new(owner, cleaned: dict[str, Any], actor: Actor, start: bool | None, backup: ConfigBackup) -> Tunnel:
    tunnel = Tunnel(owner=owner, **cleaned)
    # An interactive tunnel is saved stopped even when asked to start: create_tunnel starts it
    # afterwards through request_start, which begins its login.
    run = (not tunnel.interactive) if start is None else start
    tunnel.desired_state = Desired.RUNNING if run and not tunnel.interactive else Desired.STOPPED
    _set_desired_by(tunnel, actor)
    _save_claiming(tunnel, backup)
    return tunnel


def _save_claiming(tunnel: Tunnel, backup: ConfigBackup) -> None:
    """Save ``tunnel`` holding its port. The checks before the backup refuse a taken port or
    configuration; a request that took one meanwhile makes the unique constraints refuse it
    here, with the same answer, and the backup file written for this change goes too (its row
    rolls back with the transaction): a refusal changes nothing."""
    tunnel.listen_port = claimed_port(tunnel.direction, tunnel.local_port)
    try:
        with transaction.atomic():
            tunnel.save()
    except IntegrityError:
        discard_backup(backup)
        if tunnel.listen_port is not None and ports.is_taken(tunnel.listen_port, tunnel.pk):
            raise PortTaken(tunnel.listen_port) from None
        raise DuplicateTunnel(f"a tunnel with this configuration already exists (hash {tunnel.hash})") from None


def discard_backup(backup: ConfigBackup) -> None:
    backups.delete_files([backup.file_name])


def _ensure_unique(owner, hash_value: str, exclude_pk: int | None = None) -> None:
    clash = Tunnel.objects.owned_by(owner).filter(hash=hash_value).exclude(pk=exclude_pk)
    if clash.exists():
        raise DuplicateTunnel(f"a tunnel with this configuration already exists (hash {hash_value})")


def _set_desired_by(tunnel: Tunnel, actor: Actor) -> None:
    tunnel.desired_changed_at = timezone.now()
    tunnel.desired_by = actor.user if getattr(actor.user, "pk", None) else None
    tunnel.desired_by_token = actor.token


def create_tunnel(
    owner,
    data: Any,
    actor: Actor = SYSTEM,
    *,
    start: bool | None = None,
    required: tuple[str, ...] = REQUIRED,
    assign_port: bool = False,
) -> Tunnel:
    """Validate and create one tunnel. A new non-interactive tunnel is meant to run; an interactive
    one is created stopped unless ``start`` is true (then its login begins, as with request_start).

    ``required`` names the fields that must be sent (``validation.REQUIRED_WITH_NAME`` for
    the original's ``POST /config/new``); a missing one is a 400 and nothing is created.
    With ``assign_port`` (REST API, admin; the compat API requires ``local_port``), an -L
    tunnel that leaves ``local_port`` out gets the first free port of its owner's range.
    """
    try:
        cleaned = clean_tunnel_data(data, required=required, assign_port=assign_port)
    except TunnelDataError as exc:
        raise _invalid(exc) from None
    cleaned.update(_key_choice(owner, data))
    check_policy(owner, cleaned)
    with transaction.atomic():
        _lock_owner(owner)
        if "ssh_key_id" not in cleaned:
            cleaned["ssh_key_id"] = default_key_id(owner)
        check_count(owner, Tunnel.objects.owned_by(owner).count() + 1)
        if "local_port" not in cleaned:
            tunnel = _create_on_free_port(owner, cleaned, actor, start)
        else:
            _ensure_unique(owner, Tunnel(**{k: cleaned[k] for k in HASH_FIELDS}).compute_hash())
            ports.ensure_free(claimed_port(cleaned["direction"], cleaned["local_port"]))
            tunnel = _save_new(owner, cleaned, actor, start, snapshot(owner, "before create", actor))
        if start and tunnel.interactive:
            # Asked for explicitly (never by default): a person will answer its prompts.
            request_start(tunnel, actor)
        bump_marker()
    return tunnel


def _create_on_free_port(owner, cleaned: dict[str, Any], actor: Actor, start: bool | None) -> Tunnel:
    """Create an -L tunnel on the first free port of the owner's range, retrying when a
    concurrent request claims that port first (the unique claim decides)."""
    for attempt in range(ASSIGN_ATTEMPTS):
        port = ports.free_port(owner, first=attempt == 0)  # NoFreePort: refused before anything is written
        try:
            with transaction.atomic():  # a lost attempt takes its backup row along
                backup = snapshot(owner, "before create", actor)
                return _save_new(owner, {**cleaned, "local_port": str(port)}, actor, start, backup)
        except PortTaken:
            continue  # re-read the claims: the port just went to someone else
    raise NoFreePort("could not claim a free port: other requests kept taking them; try again")


def update_tunnel(tunnel: Tunnel, data: Any, actor: Actor = SYSTEM, *, partial: bool = False) -> Tunnel:
    """Change a tunnel's configuration. A running tunnel is restarted with the new config."""
    try:
        cleaned = clean_tunnel_data(data, partial=partial)
    except TunnelDataError as exc:
        raise _invalid(exc) from None
    cleaned.update(_key_choice(tunnel.owner, data))
    merged = {field: cleaned.get(field, getattr(tunnel, field)) for field in POLICY_FIELDS}
    check_policy(tunnel.owner, merged)
    with transaction.atomic():
        _lock_owner(tunnel.owner)
        tunnel = Tunnel.objects.select_for_update().get(pk=tunnel.pk)
        if all(getattr(tunnel, field) == value for field, value in cleaned.items()):
            return tunnel  # nothing to change: no backup, no worker wake-up
        changed = _config_changed(tunnel, cleaned)
        for field, value in cleaned.items():
            setattr(tunnel, field, value)
        _ensure_unique(tunnel.owner, tunnel.compute_hash(), exclude_pk=tunnel.pk)
        ports.ensure_free(claimed_port(tunnel.direction, tunnel.local_port), exclude_pk=tunnel.pk)
        backup = snapshot(tunnel.owner, f"before update of {tunnel.name}", actor)
        if changed:
            tunnel.generation += 1
        if changed and tunnel.interactive and tunnel.desired_state == Desired.RUNNING:
            # A new configuration needs a new login, and nobody may be there to answer its prompt: stopped
            # until a person starts it (request_start). A change that keeps the process (auto_restart) keeps it.
            tunnel.desired_state = Desired.STOPPED
            _set_desired_by(tunnel, actor)
        _save_claiming(tunnel, backup)
        bump_marker()
    return tunnel


def delete_tunnel(tunnel: Tunnel, actor: Actor = SYSTEM) -> None:
    """Delete a tunnel; the worker stops its process (history is kept)."""
    with transaction.atomic():
        _lock_owner(tunnel.owner)
        snapshot(tunnel.owner, f"before delete of {tunnel.name}", actor)
        tunnel.delete()
        _drop_logs([tunnel.uuid])
        bump_marker()


def _clean_all(owner, items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise InvalidInput("'tunnels' must be a list of tunnel objects")
    cleaned_all = []
    seen: dict[str, int] = {}
    listening: dict[int, int] = {}
    owned = {key.pk: key for key in SshKey.objects.owned_by(owner)}  # at most MAX_SSH_KEYS
    for index, item in enumerate(items):
        try:
            cleaned = clean_tunnel_data(item)
            cleaned.update(_key_choice(owner, item, owned))
        except TunnelDataError as exc:
            raise _invalid(exc, prefix=f"tunnels[{index}]: ") from None
        except InvalidInput as exc:
            raise InvalidInput(f"tunnels[{index}]: {exc.message}", exc.fields) from None
        digest = Tunnel(**{k: cleaned[k] for k in HASH_FIELDS}).compute_hash()
        if digest in seen:
            raise DuplicateTunnel(f"tunnels[{index}] has the same configuration as tunnels[{seen[digest]}]")
        seen[digest] = index
        _claim_once(cleaned, index, listening)
        cleaned_all.append(cleaned)
    return cleaned_all


def _claim_once(cleaned: dict[str, Any], index: int, listening: dict[int, int]) -> None:
    """Two entries of one replace-all may not listen on one port (any address holds the port)."""
    port = claimed_port(cleaned["direction"], cleaned["local_port"])
    if port in listening:
        raise PortTaken(port, f"tunnels[{index}] listens on port {port} as tunnels[{listening[port]}] does")
    if port is not None:
        listening[port] = index


def replace_all(owner, items: Any, actor: Actor = SYSTEM, *, reason: str = "before replace-all") -> list[Tunnel]:
    """Replace ``owner``'s whole configuration, all or nothing.

    Tunnels whose configuration is unchanged keep their identity, desired
    state and running process; the rest are deleted or created.
    """
    cleaned_all = _clean_all(owner, items)
    current = {t.hash: t for t in Tunnel.objects.owned_by(owner)}
    for item, cleaned in zip(items, cleaned_all, strict=True):
        # A kept tunnel is checked with the settings it will keep, not the defaults of unsent ones.
        kept = current.get(Tunnel(**{k: cleaned[k] for k in HASH_FIELDS}).compute_hash())
        values = cleaned if kept is None else {**_current_extras(kept, cleaned), **_sent_extras(item, cleaned)}
        check_policy(owner, {**cleaned, **values})
    check_count(owner, len(cleaned_all))
    with transaction.atomic():
        _lock_owner(owner)
        existing = {t.hash: t for t in Tunnel.objects.owned_by(owner)}
        digests = [Tunnel(**{k: cleaned[k] for k in HASH_FIELDS}).compute_hash() for cleaned in cleaned_all]
        new = [cleaned for cleaned, digest in zip(cleaned_all, digests, strict=True) if digest not in existing]
        # Kept tunnels keep the ports they hold; new ones may not take another user's.
        ports.ensure_free_for(owner, [p for c in new if (p := claimed_port(c["direction"], c["local_port"]))])
        backup = snapshot(owner, reason, actor)
        result = [
            _apply_extras(existing[digest], _sent_extras(item, cleaned))
            for item, cleaned, digest in zip(items, cleaned_all, digests, strict=True)
            if digest in existing
        ]
        gone = Tunnel.objects.owned_by(owner).exclude(hash__in=set(digests))
        _drop_logs(list(gone.values_list("uuid", flat=True)))
        gone.delete()
        default_key = default_key_id(owner)
        for cleaned in new:
            result.append(_save_new(owner, {"ssh_key_id": default_key, **cleaned}, actor, None, backup))
        bump_marker()
    return result


def _sent_extras(item: dict[str, Any], cleaned: dict[str, Any]) -> dict[str, Any]:
    """The fields outside the hash that the entry really sent.

    ``clean_tunnel_data`` fills defaults for unsent fields; on a kept tunnel those
    defaults would silently reset tunnelsite's own settings (ssh_port, auto_restart,
    ssh_key, and any added later), which clients of the original never send.
    """
    body_name = {"ssh_key_id": KEY_FIELD}  # cleaned field -> the name the body uses
    return {
        field: value
        for field, value in cleaned.items()
        if field not in HASH_FIELDS and body_name.get(field, field) in item
    }


def _current_extras(tunnel: Tunnel, cleaned: dict[str, Any]) -> dict[str, Any]:
    return {field: getattr(tunnel, field) for field in cleaned if field not in HASH_FIELDS}


def _apply_extras(tunnel: Tunnel, extras_sent: dict[str, Any]) -> Tunnel:
    """Fields outside the hash that the entry sent may still differ on a kept tunnel."""
    extras = {f: v for f, v in extras_sent.items() if getattr(tunnel, f) != v}
    if extras:
        for field, value in extras.items():
            setattr(tunnel, field, value)
        if "ssh_port" in extras or "ssh_key_id" in extras:
            tunnel.generation += 1  # the worker restarts it with the new port or key
        tunnel.save()
    return tunnel


def restore_backup(backup: ConfigBackup, actor: Actor = SYSTEM) -> list[Tunnel]:
    """Put a backup's configuration back (itself backed up first).

    A key the backup names that is gone by now is left out: kept tunnels keep
    their current key, new ones get the default (a restore must not fail for it).
    """
    owned = {str(pk) for pk in SshKey.objects.owned_by(backup.owner).values_list("pk", flat=True)}
    items = [_without_missing_key(item, owned) for item in backup.tunnels]
    return replace_all(backup.owner, items, actor, reason=f"before restore of backup {backup.id}")


def _without_missing_key(item: Any, owned: set[str]) -> Any:
    if isinstance(item, dict) and item.get(KEY_FIELD) not in (None, *owned):
        return {field: value for field, value in item.items() if field != KEY_FIELD}
    return item
