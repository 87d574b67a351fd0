"""Validation of tunnel configuration: the one place these rules live.

Every API surface and the admin go through ``clean_tunnel_data``. The rules
also keep user data from ever being read as an ssh option: nothing may start
with ``-``, and no value may contain whitespace, quotes, ``=`` or ``/``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from tunnels.models import DIRECTIONS, LOCAL_TO_REMOTE, REMOTE_TO_LOCAL

# user@host or an ssh alias. Neither part may start with "-" (ssh would read
# it as an option) and only a conservative character set is allowed.
_NAME_PART = r"[A-Za-z0-9_.][A-Za-z0-9_.-]*"
REMOTE_HOST_RE = re.compile(rf"^(?:{_NAME_PART}@)?[A-Za-z0-9_][A-Za-z0-9_.-]*$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
PORT_RE = re.compile(r"^[0-9]{1,5}$")
# An IPv6 zone id ("fe80::1%eth0") names the interface of a link-local
# address. ssh -L/-R hand the bracketed host to getaddrinfo, which resolves the
# zone by interface name or index, so zones are kept: a link-local forward needs
# one. But ipaddress accepts anything after "%" except "/" and "%", which would
# let spaces, quotes, "=" or "$(...)" into the forward spec; so only the
# characters interface names use, not starting with "-", at most 15 of them
# (IFNAMSIZ - 1 on Linux and the BSDs; an interface index is at most 10 digits).
ZONE_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
MAX_NAME = 100
MAX_HOST = 255


class FieldError(ValueError):
    """A bad value for one field; the message is shown to the user."""


def check_port(value: str, field: str = "port") -> int:
    if not PORT_RE.fullmatch(value):
        raise FieldError(f"{field} must be a whole number from 1 to 65535, got {value!r}")
    port = int(value)
    if not 1 <= port <= 65535:
        raise FieldError(f"{field} must be from 1 to 65535, got {port}")
    return port


def _split_host_port(value: str) -> tuple[str | None, str]:
    """'8080' → (None, '8080'); 'h:8080' → ('h', '8080'); '[::1]:80' → ('::1', '80')."""
    if value.startswith("["):
        close = value.find("]")
        if close == -1 or value[close + 1 : close + 2] != ":":
            raise FieldError(f"expected [ipv6]:port, got {value!r}")
        return value[1:close], value[close + 2 :]
    if ":" in value:
        host, _, port = value.rpartition(":")
        return host, port
    return None, value


def _check_zone_id(host: str, field: str) -> None:
    """Refuse an IPv6 zone id that is not an interface name or index (see ``ZONE_ID_RE``)."""
    _, percent, zone = host.partition("%")
    if percent and not ZONE_ID_RE.fullmatch(zone):
        raise FieldError(
            f"{field} IPv6 zone id must be an interface name or index: up to 15 letters, digits, "
            f"'.', '-', '_', not starting with '-', got {zone!r}"
        )


def split_local(value: str) -> tuple[str, int]:
    """The local side: ``port`` (bound on 127.0.0.1), ``ipv4:port`` or ``[ipv6]:port``."""
    host, port = _split_host_port(value)
    port_number = check_port(port, "local_port")
    if host is None:
        return "127.0.0.1", port_number
    _check_zone_id(host, "local_port")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise FieldError(f"local_port host must be an IPv4 or [IPv6] address, got {host!r}") from None
    if value.startswith("[") != (address.version == 6):
        raise FieldError("IPv6 addresses in local_port must be written in brackets: [::1]:8080")
    return str(address), port_number


def split_remote(value: str, default_host: str = "localhost") -> tuple[str, int]:
    """The remote side: ``port`` (target localhost) or ``host:port`` / ``[ipv6]:port``."""
    host, port = _split_host_port(value)
    port_number = check_port(port, "remote_port")
    if host is None:
        return default_host, port_number
    if value.startswith("["):
        _check_zone_id(host, "remote_port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise FieldError(f"remote_port host {host!r} is not an IPv6 address") from None
        return host, port_number
    if len(host) > MAX_HOST or not HOSTNAME_RE.fullmatch(host):
        raise FieldError(
            f"remote_port host must be a host name or IPv4 address (letters, digits, '.', '-', '_'), got {host!r}"
        )
    return host, port_number


def clean_remote_host(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("remote_host is required: user@host or an ssh alias")
    if len(value) > MAX_HOST:
        raise FieldError(f"remote_host is at most {MAX_HOST} characters")
    if value.startswith("-"):
        raise FieldError("remote_host must not start with '-'")
    if not REMOTE_HOST_RE.fullmatch(value):
        raise FieldError(
            "remote_host must be user@host or an ssh alias: letters, digits, '.', '-', '_' and one '@' "
            f"(no spaces, quotes, '=', '/'), got {value!r}"
        )
    return value


def _port_text(value: Any, field: str) -> str:
    # bool is an int in Python; "true" is never a port.
    if isinstance(value, bool) or value is None:
        raise FieldError(f"{field} is required: a port number or host:port")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f'{field} must be a string or an integer, like "8080" or "host:8080"')
    return value.strip()


def _normalise(host: str | None, port: int, original: str) -> str:
    if host is None:
        return str(port)
    return f"[{host}]:{port}" if original.startswith("[") else f"{host}:{port}"


def clean_remote_port(value: Any) -> str:
    text = _port_text(value, "remote_port")
    host, _ = _split_host_port(text)
    _, port = split_remote(text)
    return _normalise(host, port, text)


def clean_local_port(value: Any) -> str:
    text = _port_text(value, "local_port")
    host, _ = _split_host_port(text)
    address, port = split_local(text)
    return _normalise(None if host is None else address, port, text)


def clean_name(value: Any) -> str:
    if value is None or value == "":
        return "unnamed"
    if not isinstance(value, str):
        raise FieldError("name must be a string")
    if len(value) > MAX_NAME:
        raise FieldError(f"name is at most {MAX_NAME} characters, got {len(value)}")
    if not value.isprintable():
        raise FieldError("name must contain printable characters only")
    return value


def clean_direction(value: Any) -> str:
    if value is None or value == "":
        return REMOTE_TO_LOCAL
    if value not in DIRECTIONS:
        raise FieldError(f"direction must be one of {', '.join(DIRECTIONS)}, got {value!r}")
    return value


def clean_bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    # The original manager stored "true"/"false" strings; accept them.
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise FieldError(f"{field} must be a boolean (true or false)")


def clean_ssh_port(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError("ssh_port must be a port number")
    return check_port(str(value), "ssh_port")


CLEANERS = {
    "name": clean_name,
    "remote_host": clean_remote_host,
    "remote_port": clean_remote_port,
    "local_port": clean_local_port,
    "direction": clean_direction,
    "interactive": lambda value: clean_bool(value, "interactive"),
    "ssh_port": clean_ssh_port,
    "auto_restart": lambda value: True if value is None else clean_bool(value, "auto_restart"),
}
REQUIRED = ("remote_host", "remote_port", "local_port")
# The original's POST /config/new marks the name required too (other paths default it to "unnamed").
REQUIRED_WITH_NAME = ("name", *REQUIRED)
CONFIG_FIELDS = tuple(CLEANERS)
HASH_FIELDS = ("name", "remote_host", "remote_port", "local_port", "direction", "interactive")


def missing_fields(data: dict, required: tuple[str, ...] = REQUIRED) -> list[str]:
    return [field for field in required if data.get(field) in (None, "")]


def clean_tunnel_data(
    data: Any, *, partial: bool = False, required: tuple[str, ...] = REQUIRED, assign_port: bool = False
) -> dict[str, Any]:
    """Validate a tunnel's configuration; returns cleaned values for known fields.

    Raises ``TunnelDataError`` with every problem at once. With ``partial``,
    only the fields present are cleaned (PATCH). ``required`` fields must be
    present and non-empty (the others get defaults). With ``assign_port``, an -L
    tunnel may leave ``local_port`` out (the result lacks it; the service layer
    assigns a free port); an -R tunnel still needs it, as the address it connects to.
    """
    if not isinstance(data, dict):
        raise TunnelDataError({"non_field_errors": ["expected a JSON object with tunnel fields"]})
    errors: dict[str, list[str]] = {}
    leave_out = ("local_port",) if assign_port and data.get("local_port") in (None, "") else ()
    if not partial:
        missing = missing_fields(data, tuple(field for field in required if field not in leave_out))
        if missing:
            raise TunnelDataError({f: ["this field is required"] for f in missing}, missing=missing)
    cleaned: dict[str, Any] = {}
    for field, cleaner in CLEANERS.items():
        if (partial and field not in data) or field in leave_out:
            continue
        try:
            cleaned[field] = cleaner(data.get(field))
        except FieldError as exc:
            errors[field] = [str(exc)]
    if leave_out and cleaned.get("direction") == LOCAL_TO_REMOTE:
        errors["local_port"] = ["this field is required for local_to_remote: it is the address the tunnel connects to"]
    if errors:
        raise TunnelDataError(errors)
    return cleaned


class TunnelDataError(ValueError):
    """Invalid tunnel configuration, with per-field messages."""

    def __init__(self, fields: dict[str, list[str]], missing: list[str] | None = None) -> None:
        self.fields = fields
        self.missing = missing or []
        super().__init__(self.summary)

    @property
    def summary(self) -> str:
        if self.missing:
            return f"Missing required fields: {', '.join(self.missing)}"
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in self.fields.items())
