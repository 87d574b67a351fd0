"""Host keys each owner trusts: known_hosts files written from the database.

The database alone decides trust. The worker writes one known_hosts file per
owner from that owner's ``KnownHost`` rows (``sync_owner``); ssh runs with
``StrictHostKeyChecking=accept-new``, so it appends an unknown server's key
below the file's end marker on the first successful connection (trust on
first use). Lines below the marker are harvested into ``trusted`` rows
(source ``tofu``) before the file is ever rewritten; lines above it are ours
and are dropped when their row is deleted.

A server that later offers another key is refused by ssh; ``record_change``
marks the row ``changed`` with the offered key (fetched with ssh-keyscan and
kept only if its fingerprint is the one ssh reported), and ``blocked`` keeps
the owner's tunnels to that server down until the owner accepts or deletes it.
A ``changed`` row keeps pinning its old key in the file, so nothing connects
to the server until the owner decides.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import struct
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from tunnels import services, sshkeys
from tunnels.models import HostKeyState, KnownHost, Tunnel
from tunnels.validation import HOSTNAME_RE
from tunnelsite.errors import InvalidInput, ServiceError
from tunnelsite.files import atomic_write

logger = logging.getLogger("tunnelsite.worker")

HEADER = "# Written by tunnelsite from this owner's known hosts (API: /api/v1/known-hosts/). Do not edit.\n"
END_MARKER = "# tunnelsite: end of trusted keys; ssh appends keys it trusted on first use below this line"
TOFU = "tofu"
KEYSCAN = "keyscan"
KEYSCAN_BIN = "ssh-keyscan"
KEYSCAN_TIMEOUT = 5
MAX_PASTE_CHARS = 65536
MAX_PASTE_LINES = 100

KEY_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9@.-]{0,39}$")
CHANGED_RE = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED")
OFFERED_RE = re.compile(
    r"The fingerprint for the (?P<type>[A-Za-z0-9-]+) key sent by the remote host is\s+(?P<fp>SHA256:[A-Za-z0-9+/]+)"
)
# ssh names key types in upper case ("ED25519"); ssh-keyscan -t takes them in lower case.
KEYSCAN_TYPES = {
    "ED25519": ("ed25519", ("ssh-ed25519",)),
    "RSA": ("rsa", ("ssh-rsa",)),
    "ECDSA": ("ecdsa", ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")),
    "DSA": ("dsa", ("ssh-dss",)),
    "ED25519-SK": ("ed25519-sk", ("sk-ssh-ed25519@openssh.com",)),
    "ECDSA-SK": ("ecdsa-sk", ("sk-ecdsa-sha2-nistp256@openssh.com",)),
}
ACCEPT_PATH = "/api/v1/known-hosts/{id}/accept/"


class DuplicateHostKey(ServiceError):
    status = 409


class CannotAccept(ServiceError):
    status = 409


# --- lines ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One host key for one server: what a known_hosts line says."""

    host: str
    port: int
    key_type: str
    key: str

    @property
    def ident(self) -> tuple[str, int, str]:
        return (self.host, self.port, self.key_type)

    @property
    def fingerprint(self) -> str:
        return sshkeys.fingerprint(f"{self.key_type} {self.key}")

    def row(self, owner_id: int, source: str, now) -> KnownHost:
        """An unsaved trusted row for this key (``source``: tofu or keyscan)."""
        return KnownHost(
            owner_id=owner_id,
            host=self.host,
            port=self.port,
            key_type=self.key_type,
            key=self.key,
            fingerprint=self.fingerprint,
            source=source,
            first_seen=now,
            last_seen=now,
        )


def valid_host(host: str) -> bool:
    """A host name or an IP address literal: nothing ssh or ssh-keyscan could read as an option."""
    if not host or len(host) > 255 or host.startswith("-"):
        return False
    if HOSTNAME_RE.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def key_problem(key_type: str, key: str) -> str | None:
    """Why ``key`` is not a public key blob of type ``key_type``, or None when it is."""
    if not KEY_TYPE_RE.fullmatch(key_type):
        return f"{key_type[:40]!r} is not an ssh key type"
    try:
        blob = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return "the key is not valid base64"
    if len(blob) < 4:
        return "the key is too short"
    (length,) = struct.unpack(">I", blob[:4])
    inner = blob[4 : 4 + length]
    if len(inner) == length and inner != key_type.encode():
        return f"the key is of type {inner.decode('ascii', 'replace')[:40]!r}, not {key_type!r}"
    try:
        # The whole blob must be a well-formed key of its type (cryptography checks sizes and points).
        serialization.load_ssh_public_key(f"{key_type} {key}".encode())
    except UnsupportedAlgorithm:
        return f"{key_type[:40]!r} keys are not supported"
    except ValueError:
        return "the key is truncated or malformed"
    return None


def split_host_pattern(name: str) -> tuple[str, int] | None:
    """``host`` (port 22) or ``[host]:port`` as known_hosts writes them; None for anything else."""
    if name.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\]:(\d{1,5})", name)
        if not match or not 1 <= int(match.group(2)) <= 65535:
            return None
        host, port = match.group(1), int(match.group(2))
    else:
        host, port = name, 22
    host = host.lower()
    return (host, port) if valid_host(host) else None


def host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def parse_line(line: str) -> list[Entry]:
    """The entries of one known_hosts line; [] for comments, markers, hashed names, patterns and junk."""
    fields = line.split()
    if len(fields) < 3 or fields[0].startswith(("#", "@")):
        return []  # @cert-authority / @revoked lines are not host keys we manage
    names, key_type, key = fields[:3]
    if key_problem(key_type, key):
        return []
    entries = []
    for name in names.split(","):
        if name.startswith("|") or any(ch in name for ch in "*?!"):
            continue  # hashed names cannot be read back; patterns are not one server
        target = split_host_pattern(name)
        if target:
            entries.append(Entry(target[0], target[1], key_type, key))
    return entries


def parse_known_hosts(text: str) -> list[Entry]:
    return [entry for line in text.splitlines() for entry in parse_line(line)]


def format_entry(entry: Entry) -> str:
    return f"{host_pattern(entry.host, entry.port)} {entry.key_type} {entry.key}"


def render(entries: Iterable[Entry]) -> str:
    """The whole file: our entries, then the marker below which ssh appends."""
    lines = sorted({format_entry(entry) for entry in entries})
    return HEADER + "".join(f"{line}\n" for line in lines) + END_MARKER + "\n"


def appended_part(text: str) -> str:
    """What ssh added: the text below our end marker (all of it in a file we never wrote)."""
    head, found, tail = text.partition(END_MARKER)
    return tail if found else head


def target_of(remote_host: str, ssh_port: int | None) -> tuple[str, int]:
    """The host:port a tunnel's ssh connects to (non-staff tunnels have no ssh aliases)."""
    return remote_host.rsplit("@", 1)[-1].lower(), int(ssh_port or 22)


def tunnel_target(tunnel: Tunnel) -> tuple[str, int]:
    return target_of(tunnel.remote_host, tunnel.ssh_port)


# --- the owner's file ---------------------------------------------------------


def path_for(owner_id: int) -> Path:
    return settings.DATA_DIR / "known_hosts" / f"user-{owner_id}"


def _entry(row: KnownHost) -> Entry:
    # A changed row keeps pinning the key it had: nothing connects until the owner decides.
    return Entry(row.host, row.port, row.key_type, row.key)


def harvest(owner_id: int, text: str) -> list[KnownHost]:
    """Rows for keys ssh appended (trust on first use) that the database does not know yet."""
    known = {
        (host, port, key_type)
        for host, port, key_type in KnownHost.objects.filter(owner_id=owner_id).values_list("host", "port", "key_type")
    }
    now = timezone.now()
    new: dict[tuple[str, int, str], KnownHost] = {}
    for entry in parse_known_hosts(appended_part(text)):
        if entry.ident in known or entry.ident in new:
            continue  # the database wins over what the file says
        new[entry.ident] = entry.row(owner_id, TOFU, now)
    if new:
        # Another worker may harvest the same line at the same moment.
        KnownHost.objects.bulk_create(new.values(), ignore_conflicts=True)
        for row in new.values():
            logger.info("owner %s: trusted %s on first use (%s)", owner_id, format_entry(_entry(row)), row.fingerprint)
    return list(new.values())


def sync_owner(owner_id: int) -> bool:
    """Harvest what ssh appended, then write the owner's file from the database; True when written."""
    path = path_for(owner_id)
    try:
        current = path.read_text(errors="replace")
    except FileNotFoundError:
        current = None
    if current:
        harvest(owner_id, current)
    rows = KnownHost.objects.filter(owner_id=owner_id).only("host", "port", "key_type", "key")
    wanted = render(_entry(row) for row in rows)
    if wanted == current:
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, wanted.encode())
    return True


def touch(owner_id: int, host: str, port: int) -> None:
    """The owner's trusted key of ``host:port`` was just seen working."""
    KnownHost.objects.filter(owner_id=owner_id, host=host, port=port, state=HostKeyState.TRUSTED).update(
        last_seen=timezone.now()
    )


# --- a changed key --------------------------------------------------------------


def offered_in(text: str) -> tuple[str, str] | None:
    """(ssh's key type name, fingerprint) of the key a server offered instead of the trusted one."""
    if not CHANGED_RE.search(text):
        return None
    matches = list(OFFERED_RE.finditer(text))
    if not matches:
        return None
    return matches[-1].group("type").upper(), matches[-1].group("fp")


def change_message(row: KnownHost) -> str:
    """The tunnel's last_error while ``row`` is changed: what happened and what the owner can do."""
    message = (
        f"host key changed for {row.host}:{row.port}: the server now offers {row.key_type} "
        f"{row.offered_fingerprint}, trusted is {row.fingerprint}; accept the new key in your known hosts "
        f"(POST {ACCEPT_PATH.format(id=row.id)}) or delete the entry"
    )
    if not row.offered_key:
        message += (
            " (the offered key could not be fetched from the server to check it, so it cannot be accepted: "
            "delete the entry to trust the server's key on next use instead)"
        )
    return message


def keyscan(host: str, port: int, scan_type: str) -> tuple[list[Entry], str]:
    """The keys ``ssh-keyscan`` fetches from host:port (argv only), and a problem when it failed."""
    if not valid_host(host) or scan_type not in {value[0] for value in KEYSCAN_TYPES.values()}:
        return [], f"refusing to scan {host!r} for {scan_type!r}"
    argv = [KEYSCAN_BIN, "-T", str(KEYSCAN_TIMEOUT), "-p", str(int(port)), "-t", scan_type, "--", host]
    # No credentials of the worker in its environment.
    env = {key: os.environ[key] for key in ("PATH", "LANG") if key in os.environ}
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argv, the host validated above and after "--"
            argv, capture_output=True, text=True, timeout=KEYSCAN_TIMEOUT + 5, stdin=subprocess.DEVNULL, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"ssh-keyscan failed: {exc}"
    entries = [entry for entry in parse_known_hosts(done.stdout) if (entry.host, entry.port) == (host, port)]
    return entries, "" if entries else f"ssh-keyscan got no {scan_type} key from {host}:{port}"


def fetch_offered(row: KnownHost, ssh_type: str, fingerprint: str) -> str:
    """The offered key, fetched again and kept only if it is the one ssh was shown ('' otherwise)."""
    scan_type = KEYSCAN_TYPES.get(ssh_type, ("", ()))[0]
    entries, problem = keyscan(row.host, row.port, scan_type)
    for entry in entries:
        if entry.fingerprint == fingerprint and entry.key_type == row.key_type:
            return entry.key
    logger.warning(
        "owner %s: host key of %s:%s changed to %s, but the key could not be fetched to match it: %s",
        row.owner_id,
        row.host,
        row.port,
        fingerprint,
        problem or "ssh-keyscan returned another key",
    )
    return ""


def _pinned_row(owner_id: int, host: str, port: int, ssh_type: str) -> KnownHost | None:
    types = KEYSCAN_TYPES.get(ssh_type, ("", ()))[1]
    rows = KnownHost.objects.filter(owner_id=owner_id, host=host, port=port, key_type__in=types)
    return rows.order_by("key_type").first()


def record_change(tunnel: Tunnel, text: str) -> str | None:
    """If ssh refused a changed host key in ``text``: mark the row changed and return the tunnel's error."""
    offered = offered_in(text)
    if offered is None:
        return None
    ssh_type, fingerprint = offered
    host, port = tunnel_target(tunnel)
    row = _pinned_row(tunnel.owner_id, host, port, ssh_type)
    if row is None:
        return None  # not a key we pinned (an ssh alias of a staff tunnel): ssh's own words are used
    if row.state == HostKeyState.CHANGED and row.offered_fingerprint == fingerprint:
        return change_message(row)
    row.state = HostKeyState.CHANGED
    row.offered_fingerprint = fingerprint
    row.offered_key = fetch_offered(row, ssh_type, fingerprint)
    row.changed_at = timezone.now()
    row.save(update_fields=["state", "offered_fingerprint", "offered_key", "changed_at"])
    logger.warning("owner %s: host key of %s:%s changed to %s", row.owner_id, host, port, fingerprint)
    return change_message(row)


# --- the precondition -----------------------------------------------------------


ChangedTargets = Mapping[tuple[int, str, int], str]


def changed_targets() -> dict[tuple[int, str, int], str]:
    """(owner id, host, port) → the error for every server whose key changed and was not yet accepted."""
    rows = KnownHost.objects.filter(state=HostKeyState.CHANGED).order_by("changed_at", "id")
    return {(row.owner_id, row.host, row.port): change_message(row) for row in rows}


def blocked(wanted: bool, owner_id: int, target: tuple[str, int], changed: ChangedTargets) -> str | None:
    """Why a tunnel must stay down (its server's key changed and the owner has not decided), else None."""
    if not wanted:
        return None
    return changed.get((owner_id, *target))


# --- what owners do (API and admin) --------------------------------------------


def _release(owner_id: int, host: str, port: int) -> int:
    """Retry the owner's tunnels to host:port at once (no back-off left over from the refusal)."""
    ids = [
        pk
        for pk, remote_host, ssh_port in Tunnel.objects.filter(owner_id=owner_id).values_list(
            "pk", "remote_host", "ssh_port"
        )
        if target_of(remote_host, ssh_port) == (host, port)
    ]
    count = Tunnel.objects.filter(pk__in=ids).update(backoff_until=None, consecutive_failures=0) if ids else 0
    services.bump_marker()
    return count


def accept(known_host: KnownHost) -> KnownHost:
    """Trust the key the server now offers instead of the pinned one."""
    if known_host.state != HostKeyState.CHANGED:
        raise CannotAccept(f"the host key of {known_host.host}:{known_host.port} has not changed: nothing to accept")
    if not known_host.offered_key:
        raise CannotAccept(
            f"no offered key is known for {known_host.host}:{known_host.port}: "
            "fetch failed; delete the entry to trust on next use instead"
        )
    now = timezone.now()
    values = {
        "key": known_host.offered_key,
        "fingerprint": known_host.offered_fingerprint,
        "state": HostKeyState.TRUSTED,
        "offered_key": "",
        "offered_fingerprint": "",
        "changed_at": now,
        "last_seen": now,
    }
    with transaction.atomic():
        # The worker may have recorded yet another key meanwhile: accept only the one the owner saw.
        same = KnownHost.objects.filter(
            pk=known_host.pk, state=HostKeyState.CHANGED, offered_fingerprint=known_host.offered_fingerprint
        )
        if same.update(**values) != 1:
            raise CannotAccept("the entry changed meanwhile; look at it again before accepting")
        _release(known_host.owner_id, known_host.host, known_host.port)
    for name, value in values.items():
        setattr(known_host, name, value)
    return known_host


def delete(known_host: KnownHost) -> None:
    """Forget the key: the next connection to the server trusts the key it offers (trust on first use)."""
    with transaction.atomic():
        known_host.delete()
        _release(known_host.owner_id, known_host.host, known_host.port)


# --- pre-seeding from ssh-keyscan -----------------------------------------------


LINE_SHAPE = "expected ssh-keyscan output: `host key_type key` or `[host]:port key_type key`"


def _keyscan_entry(line: str) -> Entry:
    fields = line.split()
    if len(fields) != 3:
        raise ValueError(LINE_SHAPE)
    name, key_type, key = fields
    target = split_host_pattern(name)
    if target is None:
        raise ValueError(f"{name[:80]!r} is not a host name, an address or [host]:port; {LINE_SHAPE}")
    problem = key_problem(key_type, key)
    if problem:
        raise ValueError(problem)
    return Entry(target[0], target[1], key_type, key)


def parse_keyscan(text: Any) -> list[Entry]:
    """Every entry of pasted ``ssh-keyscan`` output; comment lines are skipped, anything else refused."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("line is required: ssh-keyscan output", {"line": ["required: " + LINE_SHAPE]})
    if len(text) > MAX_PASTE_CHARS:
        raise InvalidInput("line is too long", {"line": [f"at most {MAX_PASTE_CHARS} characters"]})
    lines = [(number, raw.strip()) for number, raw in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not lines or len(lines) > MAX_PASTE_LINES:
        raise InvalidInput("line has no key", {"line": [f"1 to {MAX_PASTE_LINES} keys, {LINE_SHAPE}"]})
    entries, problems = [], []
    for number, line in lines:
        try:
            entries.append(_keyscan_entry(line))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise InvalidInput(f"line is not ssh-keyscan output: {problems[0]}", {"line": problems})
    return entries


def create_from_keyscan(owner, text: Any) -> list[KnownHost]:
    """Pin keys before the first connection (source ``keyscan``); a server already known is a 409."""
    entries = parse_keyscan(text)
    seen_here: set[tuple[str, int, str]] = set()
    for entry in entries:
        if entry.ident in seen_here:
            raise DuplicateHostKey(f"{format_entry(entry)[:120]} is pasted twice")
        seen_here.add(entry.ident)
    now = timezone.now()
    rows = [entry.row(owner.pk, KEYSCAN, now) for entry in entries]
    for row in rows:
        row.owner = owner  # the API shows the owner: no query per row for it
    try:
        with transaction.atomic():
            _refuse_known(owner, entries)
            KnownHost.objects.bulk_create(rows)
            services.bump_marker()  # the workers write the owner's file again before the next start
    except IntegrityError:
        raise DuplicateHostKey("one of these host keys was added meanwhile; list your known hosts") from None
    return rows


def _refuse_known(owner, entries: list[Entry]) -> None:
    hosts = {entry.host for entry in entries}
    known = set(KnownHost.objects.filter(owner=owner, host__in=hosts).values_list("host", "port", "key_type"))
    for entry in entries:
        if entry.ident in known:
            raise DuplicateHostKey(
                f"a {entry.key_type} key for {entry.host}:{entry.port} is already known; "
                "delete that entry first to pin another key"
            )
