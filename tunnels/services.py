"""The service layer: every change to tunnels goes through here.

Both API surfaces, the admin and the dashboard call these functions; no
business rule is written in a view. Functions only change the database
(desired state); the worker is the only code that touches processes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from tunnels import backups, logfiles, netpolicy, ports, waiting
from tunnels.models import (
    LOCAL_TO_REMOTE,
    ChangeMarker,
    ConfigBackup,
    Desired,
    SshKey,
    Status,
    Tunnel,
    WorkerNode,
    claimed_port,
)
from tunnels.ports import NoFreePort as NoFreePort  # re-exported, as the errors below
from tunnels.ports import PortTaken as PortTaken
from tunnels.validation import HASH_FIELDS, REQUIRED, TunnelDataError, clean_tunnel_data, split_local
from tunnelsite.errors import InvalidInput, QuotaExceeded, ServiceError
from tunnelsite.errors import NotFound as NotFound  # re-exported: callers use services.<Error>
from tunnelsite.files import atomic_write

MIN_PREFIX = 8
# The fields the quota and network policy checks read (an update is checked with the merged values).
POLICY_FIELDS = ("local_port", "direction", "remote_host", "ssh_port")
MARKER = "tunnels"
# Tries at a free port for a tunnel that left local_port out; each lost race re-reads the claims.
ASSIGN_ATTEMPTS = 10


# --- errors (the shared ones live in tunnelsite.errors) -----------------


class DuplicateTunnel(ServiceError):
    status = 409


class NotRunnable(ServiceError):
    status = 409


def _invalid(exc: TunnelDataError, prefix: str = "") -> InvalidInput:
    return InvalidInput(f"{prefix}{exc.summary}", exc.fields)


# --- who is acting ------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """The user (and token, if any) on whose behalf a change is made."""

    user: Any
    token: Any = None

    @classmethod
    def from_request(cls, request) -> Actor:
        from accounts.models import ApiToken

        token = request.auth if isinstance(getattr(request, "auth", None), ApiToken) else None
        return cls(user=request.user, token=token)

    @property
    def label(self) -> str:
        if self.token is not None:
            return f"{self.user.username} (token {self.token.label or self.token.prefix})"
        return getattr(self.user, "username", "system")


SYSTEM = Actor(user=None)


# --- change marker ------------------------------------------------------


def bump_marker() -> None:
    """Tell the workers the desired state changed (they poll this row)."""
    updated = ChangeMarker.objects.filter(name=MARKER).update(value=F("value") + 1, changed_at=timezone.now())
    if not updated:
        ChangeMarker.objects.get_or_create(name=MARKER, defaults={"value": 1})


def marker_value() -> int:
    return ChangeMarker.objects.filter(name=MARKER).values_list("value", flat=True).first() or 0


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
    """Validate and create one tunnel. A new non-interactive tunnel is meant to run.

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
        if tunnel.interactive and tunnel.desired_state == Desired.RUNNING:
            # The worker cannot answer an interactive prompt; don't leave it "meant to run".
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


def check_runnable(tunnel: Tunnel) -> None:
    if tunnel.interactive:
        raise NotRunnable(
            f"tunnel {tunnel.name} is interactive: it needs interactive authentication "
            "and cannot be started by the worker"
        )
    if not tunnel.holds_its_port:
        raise NotRunnable(
            f"tunnel {tunnel.name} cannot start: another tunnel on this host holds its port "
            f"({tunnel.local_port}); change its local_port first"
        )


def request_start(tunnel: Tunnel, actor: Actor = SYSTEM) -> None:
    check_runnable(tunnel)
    _set_desired([tunnel], Desired.RUNNING, actor)
    tunnel.refresh_from_db()


def request_stop(tunnel: Tunnel, actor: Actor = SYSTEM) -> None:
    _set_desired([tunnel], Desired.STOPPED, actor)
    tunnel.refresh_from_db()


def request_restart(tunnel: Tunnel, actor: Actor = SYSTEM) -> None:
    """Restart: a new generation makes the worker replace the process."""
    check_runnable(tunnel)
    with transaction.atomic():
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


# --- waiting for the worker ---------------------------------------------


def live_workers():
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_LEASE_SECONDS)
    return WorkerNode.objects.filter(last_seen__gte=cutoff)


@dataclass(frozen=True)
class Outcome:
    """What became of a start or stop request: ``done``, ``failed`` or ``queued`` (not confirmed yet),
    with the one line every API surface shows (``started, pid 123``, ``stopped``, ``failed: …``, ``queued: …``).
    ``waited`` is False when the answer came without waiting (``wait=0``, or no free waiting slot)."""

    state: str
    text: str
    waited: bool = False

    @property
    def done(self) -> bool:
        return self.state == "done"

    @property
    def queued(self) -> bool:
        return self.state == "queued"


def _outcome(tunnel: Tunnel, want_running: bool) -> Outcome | None:
    """The outcome once the worker has acted on the request, else None."""
    acted = tunnel.status_changed_at >= tunnel.desired_changed_at
    if want_running:
        if tunnel.status == Status.RUNNING and tunnel.running_generation == tunnel.generation:
            return Outcome("done", f"started, pid {tunnel.pid}")
        if tunnel.status in (Status.FAILED, Status.BACKOFF) and acted:
            return Outcome("failed", f"failed: {tunnel.last_error or 'see the tunnel log'}")
        return None
    if tunnel.status == Status.STOPPED:
        return Outcome("done", "stopped")
    return None


def wait_for_outcome(tunnel: Tunnel, want_running: bool, timeout: float) -> Outcome:
    """Wait up to ``timeout`` seconds for the worker to act; say truthfully what happened.

    Only ``settings.MAX_WAITING`` requests of this process wait at once (``tunnels.waiting``);
    beyond that the answer is given at once, exactly as with ``timeout=0``. ``tunnel`` is
    re-read from the database (callers show it afterwards)."""
    return _wait([tunnel], want_running, timeout, whole_row=True)[0]


def wait_for_outcomes(tunnels: list[Tunnel], want_running: bool, timeout: float) -> list[Outcome]:
    """``wait_for_outcome`` for several tunnels (start all, stop all): one waiting slot for the
    request and one query per poll for all of them, however many there are."""
    return _wait(tunnels, want_running, timeout, whole_row=False) if tunnels else []


def _wait(tunnels: list[Tunnel], want_running: bool, timeout: float, *, whole_row: bool) -> list[Outcome]:
    if timeout <= 0:
        return _poll(tunnels, want_running, 0.0, whole_row)
    with waiting.SLOTS.slot() as held:
        outcomes = _poll(tunnels, want_running, timeout if held else 0.0, whole_row)
        return [replace(outcome, waited=held) for outcome in outcomes]


WAIT_POLL = 0.05  # seconds between reads of the tunnel rows while waiting
WORKER_CHECK = 1.0  # seconds between checks that some worker is alive
# What ``_outcome`` reads: the columns a bulk wait re-reads for every poll.
OUTCOME_FIELDS = ("status", "status_changed_at", "desired_changed_at", "generation", "running_generation", "pid")


def _refresh(tunnels: list[Tunnel], whole_row: bool) -> None:
    if whole_row:
        for tunnel in tunnels:
            tunnel.refresh_from_db()
        return
    rows = Tunnel.objects.filter(pk__in=[t.pk for t in tunnels]).values("pk", "last_error", *OUTCOME_FIELDS)
    fresh = {row.pop("pk"): row for row in rows}
    for tunnel in tunnels:
        # A tunnel deleted meanwhile keeps its last values (and ends up "queued").
        for field, value in fresh.get(tunnel.pk, {}).items():
            setattr(tunnel, field, value)


def _poll(tunnels: list[Tunnel], want_running: bool, timeout: float, whole_row: bool) -> list[Outcome]:
    # Cost per waiting request: one read of the pending rows per WAIT_POLL plus one indexed
    # worker-lease query per WORKER_CHECK, for at most WAIT_MAX seconds.
    deadline = time.monotonic() + timeout
    next_worker_check = 0.0
    outcomes: dict[int, Outcome] = {}
    while True:
        pending = [t for t in tunnels if t.pk not in outcomes]
        _refresh(pending, whole_row)
        for tunnel in pending:
            outcome = _outcome(tunnel, want_running)
            if outcome:
                outcomes[tunnel.pk] = outcome
        if len(outcomes) == len(tunnels):
            return [outcomes[t.pk] for t in tunnels]
        now = time.monotonic()
        if now >= next_worker_check:
            if not live_workers().exists():
                return [outcomes.get(t.pk) or Outcome("queued", "queued: no worker is running") for t in tunnels]
            next_worker_check = now + WORKER_CHECK
        if now >= deadline:
            verb = "starting" if want_running else "stopping"
            return [
                outcomes.get(t.pk)
                or Outcome("queued", f"queued: {verb}, worker has not confirmed yet (status {t.status})")
                for t in tunnels
            ]
        time.sleep(WAIT_POLL)
