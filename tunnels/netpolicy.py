"""What a non-staff user's tunnels may connect to (README "Security model").

Two rules, both skipped for staff:

- **-R targets.** For ``local_to_remote`` the ``local_port`` is an address
  this host connects to. Loopback, link-local, private, unspecified,
  multicast and this host's own addresses need a matching rule in the user's
  ``allowed_targets`` or ``TUNNELSITE_ALLOWED_TARGETS``; any other (public)
  address needs ``allow_nonloopback_target`` or a matching rule.
- **SSH destinations.** ``remote_host``/``ssh_port`` are checked in this
  order: an operator ``TUNNELSITE_SSH_DESTINATIONS_DENY`` rule refuses
  (nothing overrides it); a rule of the user's ``ssh_destinations`` or of
  ``TUNNELSITE_SSH_DESTINATIONS_ALLOW`` allows; otherwise loopback,
  link-local, unspecified, multicast and this host's own addresses are
  refused and anything else is allowed.

At creation the checks see literal addresses (every numeric form) and
``localhost``-like names; at connect time the worker resolves the name itself
(``resolve_destination``) and ssh is pinned to the address it checked.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from typing import Any

from django.conf import settings

from tunnels.models import LOCAL_TO_REMOTE
from tunnels.validation import split_local
from tunnelsite import netrules
from tunnelsite.errors import PolicyDenied
from tunnelsite.netrules import Address, Rule

DEFAULT_DENIED_DESTINATIONS = frozenset(
    {netrules.UNSPECIFIED, netrules.LOOPBACK, netrules.LINK_LOCAL, netrules.MULTICAST, netrules.THIS_HOST}
)
_LOCAL_NAME_MEANS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
TARGET_GRANT = "staff can grant it in your allowed_targets, or the operator in TUNNELSITE_ALLOWED_TARGETS"
PUBLIC_TARGET_GRANT = "staff can grant allow_nonloopback_target, or a rule in your allowed_targets"
DESTINATION_GRANT = "staff can grant it in your ssh_destinations, or the operator in TUNNELSITE_SSH_DESTINATIONS_ALLOW"


class DestinationRefused(ValueError):
    """The worker's resolution of an SSH destination is refused (or failed); the message is for the owner."""


@lru_cache(maxsize=1024)
def _rules(lines: tuple[str, ...], port_required: bool) -> tuple[Rule, ...]:
    """The readable rules of ``lines``; a bad line (validated on save, so only a hand-edited row) is skipped."""
    rules = []
    for line in lines:
        line = line.partition("#")[0].strip()
        if line:
            try:
                rules.append(netrules.parse_rule(line, port_required=port_required))
            except netrules.RuleError:
                continue
    return tuple(rules)


def _user_rules(text: str, port_required: bool) -> tuple[Rule, ...]:
    return _rules(tuple((text or "").splitlines()), port_required)


def _server_rules(items: list[str], port_required: bool) -> tuple[Rule, ...]:
    return _rules(tuple(items), port_required)


def _shown(address: Address, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


# --- -R targets ------------------------------------------------------------------


def target_problem(owner, direction: str, local_port: str) -> str | None:
    """Why ``owner``'s -R tunnel may not connect to ``local_port`` on this host, or None."""
    if owner.is_staff or direction != LOCAL_TO_REMOTE:
        return None
    host, port = split_local(local_port)
    address = netrules.plain(ipaddress.ip_address(host))
    rules = _user_rules(owner.allowed_targets, True) + _server_rules(settings.ALLOWED_TARGETS, True)
    if netrules.first_match(list(rules), address, port):
        return None
    category = netrules.classify(address)
    if category is None:
        if owner.allow_nonloopback_target:
            return None
        shown = _shown(address, port)
        return f"-R target {shown} is beyond this host: your tunnels may not connect to it ({PUBLIC_TARGET_GRANT})"
    return (
        f"-R target {_shown(address, port)} is {category} on the tunnelsite host: your tunnels may not connect "
        f"to it ({TARGET_GRANT})"
    )


# --- SSH destinations --------------------------------------------------------------


def destination_verdict(owner, address: Address, port: int) -> str | None:
    """Why ``owner``'s tunnels may not reach an SSH server at ``address:port``, or None (see the module doc)."""
    shown = _shown(netrules.plain(address), port)
    denied = netrules.first_match(list(_server_rules(settings.SSH_DESTINATIONS_DENY, False)), address, port)
    if denied:
        return f"SSH destination {shown} is denied by the server's TUNNELSITE_SSH_DESTINATIONS_DENY ({denied})"
    allowed = _user_rules(owner.ssh_destinations, False) + _server_rules(settings.SSH_DESTINATIONS_ALLOW, False)
    if netrules.first_match(list(allowed), address, port):
        return None
    category = netrules.classify(address)
    if category in DEFAULT_DENIED_DESTINATIONS:
        return f"SSH destination {shown} is {category}: your tunnels may not reach it ({DESTINATION_GRANT})"
    return None


def destination_host(remote_host: str, ssh_port: int | None) -> tuple[str, int]:
    """The host part of ``user@host`` and the port ssh connects to."""
    return remote_host.rsplit("@", 1)[-1], int(ssh_port or 22)


def literal_destination_problem(owner, remote_host: str, ssh_port: int | None) -> str | None:
    """The check that needs no DNS: an address in any numeric form, or a name that always means this host."""
    if owner.is_staff:
        return None
    host, port = destination_host(remote_host, ssh_port)
    address = netrules.numeric_address(host)
    if address is not None:
        return destination_verdict(owner, address, port)
    if netrules.is_local_name(host):
        verdicts = [destination_verdict(owner, meant, port) for meant in _LOCAL_NAME_MEANS]
        if all(verdicts):
            return f"{host} always names this host: {verdicts[0]}"
    return None


def resolve_destination(tunnel) -> str | None:
    """The address the worker pins ssh to (``HostName``), after checking it; None for staff (ssh resolves).

    The first address ``getaddrinfo`` returns that the policy allows: ssh connects only there, so a
    name that also resolves to a denied address gains nothing. Raises ``DestinationRefused``.
    """
    if tunnel.owner.is_staff:
        return None
    host, port = destination_host(tunnel.remote_host, tunnel.ssh_port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DestinationRefused(f"unknown host: {host} could not be resolved ({why})") from None
    first_refusal = ""
    for info in infos:
        text = info[4][0]
        verdict = destination_verdict(tunnel.owner, ipaddress.ip_address(text.partition("%")[0]), port)
        if verdict is None:
            return str(ipaddress.ip_address(text))
        first_refusal = first_refusal or verdict
    raise DestinationRefused(f"{host} resolves to an address your tunnels may not reach: {first_refusal}")


# --- what the service layer and the worker call -------------------------------------


def tunnel_problem(owner, values: dict[str, Any]) -> str | None:
    """The policy's objection to a tunnel configuration (a row's or cleaned values), or None."""
    problem = target_problem(owner, values["direction"], values["local_port"])
    return problem or literal_destination_problem(owner, values["remote_host"], values.get("ssh_port"))


def row_problem(tunnel) -> str | None:
    """``tunnel_problem`` of a saved tunnel (the worker's precondition: a grant may have been withdrawn)."""
    values = {field: getattr(tunnel, field) for field in ("direction", "local_port", "remote_host", "ssh_port")}
    return tunnel_problem(tunnel.owner, values)


def check_tunnel(owner, values: dict[str, Any]) -> None:
    """Raise ``PolicyDenied`` (403) when ``owner`` may not have a tunnel with these values."""
    problem = tunnel_problem(owner, values)
    if problem:
        raise PolicyDenied(problem)
