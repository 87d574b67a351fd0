"""The service layer for users' SSH keys: generate, upload, delete, and the authorized_keys line.

The REST API, the admin and the management commands call these functions;
no rule about keys is written in a view. Key material (generation, parsing,
encryption at rest) lives in ``tunnels.sshkeys``; this module decides who may
hold which key and what a key may do on the user's SSH server.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tunnels import sshkeys
from tunnels.models import LOCAL_TO_REMOTE, SshKey, Tunnel
from tunnels.services import _lock_owner
from tunnels.ssh import remote_end
from tunnels.validation import FieldError
from tunnelsite.errors import InvalidInput, QuotaExceeded, ServiceError

# Key names appear in the key's comment (``tunnelsite:<user>:<name>``) and in messages.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,99}$")
RSA_MAX_BITS = 8192
# from="..." entries: an address, a CIDR network, or an ssh host pattern (``*`` and ``?``),
# each optionally negated with "!" (sshd(8) "from=", ssh_config(5) PATTERNS).
HOST_PATTERN_RE = re.compile(r"^[A-Za-z0-9*?][A-Za-z0-9*?._-]{0,252}$")
MAX_FROM_ENTRIES = 32
# When a key's tunnels use only one direction, the other must still be closed:
# sshd allows every forward of a direction that has no permitopen/permitlisten.
# These names are under the reserved ".invalid" domain (RFC 6761: never resolves),
# and the listen pattern is upper case, which sshd's lower-cased listen host never matches.
NO_OPEN = "none.invalid:1"
NO_LISTEN = "NONE.INVALID:1"


class DuplicateKey(ServiceError):
    status = 409


class KeyInUse(ServiceError):
    status = 409


class UnusableTunnel(ServiceError):
    """A tunnel's stored target cannot be written into an authorized_keys option."""

    status = 409


# --- input ------------------------------------------------------------------


def clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is required: a short label such as 'laptop'", {"name": ["this field is required"]})
    if not NAME_RE.fullmatch(name):
        message = "name must be 1-100 letters, digits, '.', '_', '-', '@', '+', not starting with a symbol"
        raise InvalidInput(f"name: {message}", {"name": [message]})
    return name


def clean_expires(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        when = value if isinstance(value, datetime) else parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but impossible, e.g. month 13
        when = None
    if when is None:
        message = "must be an ISO 8601 date and time, e.g. 2027-01-01T00:00:00Z"
        raise InvalidInput(f"expires_at: {message}", {"expires_at": [message]})
    if timezone.is_naive(when):
        when = timezone.make_aware(when, UTC)  # a time without offset is read as UTC
    if when <= timezone.now():
        raise InvalidInput("expires_at: must be in the future", {"expires_at": ["must be in the future"]})
    return when


def _bits(algorithm: str, bits: Any) -> int | None:
    if algorithm != sshkeys.RSA:
        if bits not in (None, ""):
            raise InvalidInput("bits: only RSA keys take a size", {"bits": ["only RSA keys take a size"]})
        return None
    if bits in (None, ""):
        return sshkeys.RSA_DEFAULT_BITS
    whole = isinstance(bits, int) and not isinstance(bits, bool)
    if not whole or not sshkeys.RSA_MIN_GENERATED_BITS <= bits <= RSA_MAX_BITS:
        message = f"must be a whole number from {sshkeys.RSA_MIN_GENERATED_BITS} to {RSA_MAX_BITS}"
        raise InvalidInput(f"bits: {message}", {"bits": [message]})
    return bits


def _algorithm(algorithm: Any) -> str:
    if algorithm in (None, ""):
        return sshkeys.ED25519
    if algorithm not in (sshkeys.ED25519, sshkeys.RSA):
        message = f"must be {sshkeys.ED25519} (default) or {sshkeys.RSA}"
        raise InvalidInput(f"algorithm: {message}", {"algorithm": [message]})
    return algorithm


# --- creating keys ------------------------------------------------------------


def _store(owner, name: str, private_key, expires_at: datetime | None) -> SshKey:
    """Save a new key for ``owner`` under the per-user limit, refusing duplicates with a clear 409."""
    key = sshkeys.build(owner, name, private_key, comment=sshkeys.default_comment(owner, name))
    key.expires_at = expires_at
    with transaction.atomic():
        _lock_owner(owner)  # two concurrent creates cannot both pass the count
        mine = SshKey.objects.owned_by(owner)
        if mine.count() >= settings.MAX_SSH_KEYS:
            raise QuotaExceeded(
                f"SSH key limit reached: you may have at most {settings.MAX_SSH_KEYS} keys (MAX_SSH_KEYS)"
            )
        if mine.filter(name=name).exists():
            raise DuplicateKey(f"you already have a key named '{name}'")
        same = mine.filter(fingerprint=key.fingerprint).values_list("name", flat=True).first()
        if same is not None:
            raise DuplicateKey(f"this key is already stored as '{same}' ({key.fingerprint})")
        try:
            with transaction.atomic():
                key.save()
        except IntegrityError:
            raise DuplicateKey(f"a key named '{name}' or with fingerprint {key.fingerprint} exists") from None
    return key


def generate_key(
    owner, name: Any, algorithm: Any = sshkeys.ED25519, bits: Any = None, expires_at: Any = None
) -> SshKey:
    """A new key pair for ``owner``: ed25519 by default, RSA (3072-8192 bits, default 4096) on request."""
    name = clean_name(name)
    algorithm = _algorithm(algorithm)
    size = _bits(algorithm, bits)
    expires = clean_expires(expires_at)
    _refuse_if_full_or_taken(owner, name)  # before spending seconds on an RSA key
    return _store(owner, name, sshkeys.new_private_key(algorithm, size), expires)


def upload_key(owner, name: Any, private_key_text: Any, passphrase: Any = None, expires_at: Any = None) -> SshKey:
    """Store a private key the user already has (OpenSSH or PEM), re-encrypted under our own secret."""
    name = clean_name(name)
    expires = clean_expires(expires_at)
    try:
        private_key = sshkeys.parse_private_key(private_key_text, passphrase)
    except sshkeys.BadKey as exc:
        raise InvalidInput(f"{exc.field}: {exc}", {exc.field: [str(exc)]}) from None
    return _store(owner, name, private_key, expires)


CREATE_FIELDS = ("name", "algorithm", "bits", "private_key", "passphrase", "expires_at")


def create_key(owner, data: Any) -> SshKey:
    """A request body: ``private_key`` uploads that key, otherwise one is generated."""
    if not isinstance(data, dict):
        raise InvalidInput("expected a JSON object with the key's name (and private_key to upload one)")
    unknown = sorted(set(data) - set(CREATE_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown fields: {', '.join(map(str, unknown))[:200]}", {field: ["unknown field"] for field in unknown}
        )
    if data.get("private_key") not in (None, ""):
        for field in ("algorithm", "bits"):
            if data.get(field) not in (None, ""):
                message = "only for generated keys: an uploaded key has its own"
                raise InvalidInput(f"{field}: {message}", {field: [message]})
        return upload_key(owner, data.get("name"), data["private_key"], data.get("passphrase"), data.get("expires_at"))
    if data.get("passphrase") not in (None, ""):
        raise InvalidInput("passphrase: only with private_key", {"passphrase": ["only with private_key"]})
    return generate_key(owner, data.get("name"), data.get("algorithm"), data.get("bits"), data.get("expires_at"))


def _refuse_if_full_or_taken(owner, name: str) -> None:
    mine = SshKey.objects.owned_by(owner)
    if mine.count() >= settings.MAX_SSH_KEYS:
        raise QuotaExceeded(f"SSH key limit reached: you may have at most {settings.MAX_SSH_KEYS} keys (MAX_SSH_KEYS)")
    if mine.filter(name=name).exists():
        raise DuplicateKey(f"you already have a key named '{name}'")


# --- deleting ---------------------------------------------------------------


def tunnels_using(key: SshKey) -> list[Tunnel]:
    return list(Tunnel.objects.filter(ssh_key=key).order_by("name", "id"))


def delete_key(key: SshKey) -> None:
    """Delete a key no tunnel uses; a key in use is a 409 naming the tunnels."""
    with transaction.atomic():
        _lock_owner(key.owner)
        names = [t.name for t in tunnels_using(key)]
        if names:
            raise KeyInUse(
                f"key '{key.name}' is used by tunnels: {', '.join(names)}; attach another key first",
                {"tunnels": names},
            )
        key.delete()


# --- the authorized_keys line -------------------------------------------------


def _safe(value: str, tunnel: Tunnel) -> str:
    # Validation already refuses these; a value that slipped past (an old row)
    # would break out of the quoted option, so it is refused here too.
    if not value or '"' in value or "\\" in value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise UnusableTunnel(f"tunnel '{tunnel.name}' has a target that cannot be written into an authorized_keys line")
    return value


def permit_for(tunnel: Tunnel) -> tuple[str, str]:
    """``("permitopen", "host:port")`` for ssh -L, ``("permitlisten", "host:port")`` for ssh -R.

    The host is what ssh puts in its request (``tunnels.ssh.remote_end``):
    the target of -L, or the listen address of -R, ``localhost`` when the
    tunnel names none. sshd compares permitopen hosts literally and matches
    permitlisten hosts as patterns against the lower-cased request.
    """
    try:
        end = remote_end(tunnel)
    except FieldError:
        raise UnusableTunnel(f"tunnel '{tunnel.name}' has an invalid remote_port; fix it first") from None
    option = "permitlisten" if tunnel.direction == LOCAL_TO_REMOTE else "permitopen"
    return option, _safe(end, tunnel)


def clean_from(addresses: Any) -> list[str]:
    """from= entries: addresses, CIDR networks (host bits zero) or host patterns, optionally negated."""
    if addresses in (None, "", []):
        return []
    # "a, b" as people type it: spaces around the commas are not part of an entry.
    items = [item.strip() for item in addresses.split(",")] if isinstance(addresses, str) else addresses
    if not isinstance(items, list | tuple) or len(items) > MAX_FROM_ENTRIES:
        raise InvalidInput(f"from: at most {MAX_FROM_ENTRIES} comma-separated entries", {"from": ["too many entries"]})
    return [_from_entry(item) for item in items]


def _from_entry(item: Any) -> str:
    message = "each entry must be an IP address, a CIDR network like 10.0.0.0/8, or a host pattern like *.example.com"
    if not isinstance(item, str):
        raise InvalidInput(f"from: {message}", {"from": [message]})
    negated, body = (True, item[1:]) if item.startswith("!") else (False, item)
    try:
        text = str(ipaddress.ip_network(body, strict=True)) if "/" in body else str(ipaddress.ip_address(body))
    except ValueError:
        if "/" in body or ":" in body or not HOST_PATTERN_RE.fullmatch(body):
            raise InvalidInput(f"from: {message}, got {item[:60]!r}", {"from": [message]}) from None
        text = body
    if "%" in text:  # a zone id is no part of a source address sshd compares
        raise InvalidInput(f"from: {message}, got {item[:60]!r}", {"from": [message]})
    return f"!{text}" if negated else text


def authorized_keys_line(key: SshKey, from_addresses: Any = None, tunnels: Iterable[Tunnel] | None = None) -> str:
    """The line for ``~/.ssh/authorized_keys`` letting ``key`` do only what its owner's tunnels need.

    ``restrict`` turns everything off; ``port-forwarding`` with permitopen (ssh -L
    targets) and permitlisten (ssh -R listen addresses) turns on exactly the
    tunnels' forwards. A direction no tunnel uses gets a permit that matches no
    real request (sshd allows every forward of a direction left unlisted). A key
    no tunnel uses gets ``restrict`` alone: it may log in and do nothing.

    ``tunnels``: the key's tunnels when the caller already fetched them (a list
    of keys prefetches them in one query instead of one per key).
    """
    sources = clean_from(from_addresses)
    using = tunnels_using(key) if tunnels is None else tunnels
    permits = {permit_for(tunnel) for tunnel in using if tunnel.owner_id == key.owner_id}
    options = ["restrict"]
    if permits:
        opens = sorted(value for option, value in permits if option == "permitopen") or [NO_OPEN]
        listens = sorted(value for option, value in permits if option == "permitlisten") or [NO_LISTEN]
        options.append("port-forwarding")
        options += [f'permitopen="{value}"' for value in opens]
        options += [f'permitlisten="{value}"' for value in listens]
    if sources:
        options.append(f'from="{",".join(sources)}"')
    comment = key.comment or sshkeys.default_comment(key.owner, key.name)
    comment = "".join(ch if ch.isprintable() else "?" for ch in comment)
    return f"{','.join(options)} {key.public_key.strip()} {comment}"


# --- rotation -----------------------------------------------------------------


def reencrypt_all(keys: Iterable[SshKey] | None = None) -> int:
    """Re-encrypt every stored private key under the current server secret; returns how many."""
    count = 0
    with transaction.atomic():  # all or nothing: one undecryptable key leaves every row as it was
        for key in keys if keys is not None else SshKey.objects.order_by("created_at", "id"):
            fresh = sshkeys.reencrypt(key.private_key_encrypted)
            SshKey.objects.filter(pk=key.pk).update(private_key_encrypted=fresh)
            count += 1
    return count
