"""Addresses and network rules, as pure functions (no database, no DNS).

Used by the accounts app (validating a user's grants) and the tunnels app
(the -R target and SSH destination policy, ``tunnels.netpolicy``), so it
lives below both. Numeric IPv4 forms are read the way the resolver and ssh
read them (``getaddrinfo`` with ``AI_NUMERICHOST``, i.e. ``inet_aton``):
``0``, ``2130706433``, ``0x7f.1``, ``127.1`` and ``017700000001`` are
addresses, not names, and are classified as the address they mean.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

import psutil

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Categories, in the words refusals use ("127.0.0.1 is a loopback address").
LOOPBACK = "a loopback address"
LINK_LOCAL = "a link-local address"
PRIVATE = "a private or reserved address"
UNSPECIFIED = "an unspecified address (it means this host)"
MULTICAST = "a multicast or broadcast address"
THIS_HOST = "one of this host's own addresses"

HOST_ADDRESSES_TTL = 30.0  # interfaces change rarely; a refusal may lag a new address by this long
# 0.0.0.0/8 is "this network": Linux connects 0.0.0.0 to this host, so all of it counts as unspecified.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# Names that mean this host whatever DNS says (RFC 6761 reserves .localhost; Debian's /etc/hosts names).
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class RuleError(ValueError):
    """A rule line that cannot be read; the message names the line and what is expected."""


# --- addresses ---------------------------------------------------------------------


def plain(address: Address) -> Address:
    """``address`` without an IPv6 zone, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) as the IPv4 it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id:
            return ipaddress.IPv6Address(str(address).partition("%")[0])
    return address


def numeric_address(text: str) -> Address | None:
    """The address ``text`` means as a numeric host (every form ``getaddrinfo`` accepts), else None."""
    if not text or any(ch.isspace() for ch in text):
        return None
    try:
        infos = socket.getaddrinfo(text, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    return plain(ipaddress.ip_address(infos[0][4][0].partition("%")[0]))


def is_local_name(name: str) -> bool:
    """``localhost`` and the names that always mean it (also with a trailing dot)."""
    name = name.lower().rstrip(".")
    return name in LOCAL_NAMES or name.endswith(".localhost")


_host_cache: tuple[float, frozenset[Address]] = (0.0, frozenset())


def host_addresses() -> frozenset[Address]:
    """Every address of this host's interfaces (psutil), cached for ``HOST_ADDRESSES_TTL`` seconds."""
    global _host_cache
    now = time.monotonic()
    if now < _host_cache[0]:
        return _host_cache[1]
    found: set[Address] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                for text in (entry.address, entry.broadcast):
                    try:
                        found.add(plain(ipaddress.ip_address((text or "").partition("%")[0])))
                    except ValueError:
                        continue
    _host_cache = (now + HOST_ADDRESSES_TTL, frozenset(found))
    return _host_cache[1]


def classify(address: Address) -> str | None:
    """The category that makes ``address`` more than a public address elsewhere, or None."""
    address = plain(address)
    if address.is_unspecified or address in _THIS_NETWORK:
        return UNSPECIFIED
    if address.is_loopback:
        return LOOPBACK
    if address.is_link_local:
        return LINK_LOCAL
    if address.is_multicast or address == _BROADCAST:
        return MULTICAST
    if address in host_addresses():
        return THIS_HOST
    if not address.is_global:
        return PRIVATE
    return None


# --- rules -----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A network and a port range: what one rule line allows (or denies)."""

    network: Network
    low: int = 1
    high: int = 65535
    text: str = ""

    def matches(self, address: Address, port: int) -> bool:
        address = plain(address)
        return address.version == self.network.version and address in self.network and self.low <= port <= self.high

    def __str__(self) -> str:
        return self.text or str(self.network)


def _network(text: str) -> Network:
    """An address or CIDR; IPv4 in any numeric form (``127.1``, ``0x7f000001/8``)."""
    address, slash, length = text.partition("/")
    numeric = numeric_address(address)
    if numeric is None or (slash and not length.isdigit()):
        raise RuleError(f"{text!r} is not an IP address or CIDR")
    try:
        return ipaddress.ip_network(f"{numeric}/{length}" if slash else str(numeric), strict=False)
    except ValueError as exc:
        raise RuleError(f"{text!r} is not a valid CIDR: {exc}") from None


def _ports(text: str) -> tuple[int, int]:
    low_text, dash, high_text = text.partition("-")
    if not low_text.isdigit() or (dash and not high_text.isdigit()):
        raise RuleError(f"{text!r} is not a port or a range low-high")
    low, high = int(low_text), int(high_text if dash else low_text)
    if not 1 <= low <= high <= 65535:
        raise RuleError(f"port range {text!r} must satisfy 1 <= low <= high <= 65535")
    return low, high


def _split(line: str) -> tuple[str, str | None]:
    """(network text, port text or None): ``[v6]:port``, ``[v6]``, bare IPv6, ``v4:port``, bare v4."""
    if line.startswith("["):
        close = line.find("]")
        rest = line[close + 1 :] if close != -1 else ""
        if close == -1 or (rest and not rest.startswith(":")):
            raise RuleError(f"{line!r}: expected [IPv6 address or CIDR]:port")
        return line[1:close], rest[1:] if rest else None
    if line.count(":") > 1:
        return line, None  # a bare IPv6 address or CIDR (a port needs brackets)
    host, colon, port = line.partition(":")
    return host, port if colon else None


def parse_rule(line: str, *, port_required: bool) -> Rule:
    """One rule: ``host:port``, ``host:low-high``, ``CIDR:port``, ``CIDR:low-high``, IPv6 in brackets;
    without ``port_required`` also a bare address or CIDR (any port)."""
    text = line.strip()
    host, port = _split(text)
    if port is None and port_required:
        raise RuleError(f"{text!r}: a port is required (host:port or CIDR:low-high, IPv6 as [address]:port)")
    low, high = _ports(port) if port is not None else (1, 65535)
    return Rule(_network(host), low, high, text)


def parse_rules(text: str | list[str], *, port_required: bool) -> list[Rule]:
    """Every rule of ``text`` (one per line; ``#`` starts a comment); raises ``RuleErrors`` listing every
    bad line at once."""
    lines = text if isinstance(text, list) else text.splitlines()
    rules, problems = [], []
    for number, raw in enumerate(lines, 1):
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        try:
            rules.append(parse_rule(line, port_required=port_required))
        except RuleError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise RuleErrors(problems)
    return rules


class RuleErrors(ValueError):
    """Several bad rule lines, each message naming its line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def first_match(rules: list[Rule], address: Address, port: int) -> Rule | None:
    return next((rule for rule in rules if rule.matches(address, port)), None)
