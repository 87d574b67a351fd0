"""The one place an ssh command line is built.

``build_command`` is a pure function from a tunnel (plus paths) to an argv
list and environment: no shell is ever involved, every user value has been
validated by ``tunnels.validation``, and the destination is placed after
``--`` so it can never be read as an option. The options every tunnel process
shares (host keys, identity, port, pinned address, forward) come from
``tunnel_options``; the autossh command (here) and the interactive ssh master
(``tunnels.ssh.master``) wrap them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from tunnels import hostkeys
from tunnels.models import Tunnel
from tunnels.validation import split_local, split_remote

MARKER_ENV = "TUNNELSITE_TUNNEL"
DATA_DIR_ENV = "TUNNELSITE_DATA_DIR"
NODE_ENV = "TUNNELSITE_TUNNEL_NODE"
GENERATION_ENV = "TUNNELSITE_TUNNEL_GENERATION"

# Environment a tunnel process may inherit from the worker. Everything else
# (credentials, DATABASE_URL, SSH_AUTH_SOCK for non-staff...) is left out.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")


class UnsafeCommand(ValueError):
    """A value would be read as an ssh option; validation should have caught it."""


def _host(host: str) -> str:
    """IPv6 literals go in brackets inside a forward spec."""
    return f"[{host}]" if ":" in host else host


def remote_end(tunnel: Tunnel, port: int | None = None) -> str:
    """The server's side of the forward as ssh requests it: the -L target or the -R listen address,
    ``host:port`` (``localhost`` when the tunnel names no host, IPv6 in brackets). ``port`` replaces
    the tunnel's own (0: the server picks one). The authorized_keys permits are written from it too.
    """
    host, own_port = split_remote(tunnel.remote_port, default_host="localhost")
    return f"{_host(host)}:{own_port if port is None else port}"


def forward_spec(tunnel: Tunnel, remote_port: int | None = None) -> tuple[str, str]:
    """('-L', 'lhost:lport:thost:tport') or ('-R', 'rhost:rport:lhost:lport')."""
    local_host, local_port = split_local(tunnel.local_port)
    local = f"{_host(local_host)}:{local_port}"
    if tunnel.is_forward_local:
        return "-L", f"{local}:{remote_end(tunnel, remote_port)}"
    return "-R", f"{remote_end(tunnel, remote_port)}:{local}"


def _guard(value: str, what: str) -> str:
    # Second line of defence behind validation: nothing user-supplied may look
    # like an option or smuggle a second word.
    if not value or value.startswith("-") or any(ch.isspace() for ch in value) or "\0" in value:
        raise UnsafeCommand(f"refusing unsafe {what}: {value!r}")
    return value


@dataclass(frozen=True)
class Identity:
    """How a tunnel authenticates, as plain values (``identity_for`` picks it).

    A user's key: ``agent`` (the worker's ssh-agent socket) and ``public_key``
    (the key's public half, so ssh offers that key and no other the agent
    holds). The server key (``TUNNELSITE_SSH_IDENTITY``) is for staff tunnels
    without a key only; ``ambient_agent`` (staff, no key, no server key) lets
    ssh use the worker's own ``SSH_AUTH_SOCK`` and ssh_config as before.
    """

    agent: str | None = None
    public_key: str | None = None
    key_name: str = ""
    server_key: str | None = None
    ambient_agent: bool = False


@dataclass(frozen=True)
class Command:
    """What the worker runs: ``argv`` and ``env``; ``display_argv`` names no path (logs show it)."""

    argv: list[str]
    env: dict[str, str]
    display_argv: list[str]

    @property
    def display(self) -> str:
        return " ".join(self.display_argv)


class NoKey(ValueError):
    """A non-staff tunnel has no SSH key: it never falls back to the server's key."""


NO_KEY_ERROR = "no SSH key: add one in your keys and attach it"


KIND_ENV = "TUNNELSITE_TUNNEL_KIND"  # "master" for an interactive tunnel's ssh (autossh has none)


class Argv:
    """An argv being built, with its display copy: ``add(..., display=x)`` shows ``x`` for the last value
    (a path users must not see in the log)."""

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.shown: list[str] = []

    def add(self, *values: str, display: str | None = None) -> None:
        self.argv.extend(values)
        self.shown.extend(values if display is None else (*values[:-1], display))


def build_command(
    tunnel: Tunnel,
    *,
    identity: Identity,
    known_hosts: str | Path,
    ssh_config: str | Path | None,
    node: str = "",
    address: str | None = None,
) -> Command:
    """The autossh argv and environment for ``tunnel`` (pure: touches no files).

    ``address``: the destination address the worker resolved and checked (``tunnels.netpolicy``);
    ssh connects to exactly it, and host keys stay filed under the name (``pinned_options``).
    """
    line = Argv()
    line.add(settings.AUTOSSH_BIN, display=Path(settings.AUTOSSH_BIN).name)
    line.add("-M", "0", "-N")
    tunnel_options(line.add, tunnel, identity=identity, known_hosts=known_hosts, ssh_config=ssh_config, address=address)
    return Command(line.argv, _environment(tunnel, identity, node), line.shown)


def tunnel_options(
    add: Callable[..., None],
    tunnel: Tunnel,
    *,
    identity: Identity,
    known_hosts: str | Path,
    ssh_config: str | Path | None,
    address: str | None,
    batch: bool = True,
) -> None:
    """Every option of a tunnel's ssh, its forward, ``--`` and the destination, through ``add``.

    ``batch=False`` (the interactive master) lets ssh ask for a password; its caller names the
    prompts it may ask (PreferredAuthentications) before these, since ssh keeps an option's first value.
    """
    destination = _guard(tunnel.remote_host, "destination")
    flag, spec = forward_spec(tunnel)
    _guard(spec, "forward")
    for option in (
        f"ServerAliveInterval={settings.SSH_SERVER_ALIVE_INTERVAL}",
        f"ServerAliveCountMax={settings.SSH_SERVER_ALIVE_COUNT}",
        "ExitOnForwardFailure=yes",
        f"BatchMode={'yes' if batch else 'no'}",
        f"ConnectTimeout={settings.SSH_CONNECT_TIMEOUT}",
        # Trust on first use, remembered per owner. Never "no" + /dev/null.
        "StrictHostKeyChecking=accept-new",
        # Only the owner's file decides trust (tunnels.hostkeys), in plain names the worker can import.
        "GlobalKnownHostsFile=none",
        "HashKnownHosts=no",
        # The agent holds every user's keys: never lend it to a server.
        "ForwardAgent=no",
        # VERBOSE logs "Authenticated to ..." which tells a live -R forward from a connecting one.
        "LogLevel=VERBOSE",
    ):
        add("-o", option)
    add("-o", f"UserKnownHostsFile={known_hosts}", display="UserKnownHostsFile=<known_hosts>")
    if ssh_config:
        add("-F", str(ssh_config), display="<ssh_config>")
    if identity.agent and identity.public_key:
        add("-o", f"IdentityAgent={identity.agent}", display="IdentityAgent=<agent>")
        add("-o", f"IdentityFile={identity.public_key}", display=f"IdentityFile=<key:{identity.key_name}>")
    elif identity.server_key:
        add("-i", str(identity.server_key), display="<server key>")
    if not identity.ambient_agent:
        add("-o", "IdentitiesOnly=yes")
    if tunnel.ssh_port:
        add("-p", str(int(tunnel.ssh_port)))
    if address is not None:
        add(*pinned_options(tunnel, address))
    add(flag, spec, "--", destination)


def pinned_options(tunnel: Tunnel, address: str) -> list[str]:
    """``-o HostName=<address> -o HostKeyAlias=<name>``: connect to the checked address, so DNS cannot
    swap it; look up and save the host key under the name (``[host]:port`` for another port than 22, as
    known_hosts files it: ssh appends no port to an alias), as ``tunnels.hostkeys`` keys its entries."""
    pinned = str(ipaddress.ip_address(address))  # an address we resolved, never user text
    alias = _guard(hostkeys.host_pattern(*hostkeys.tunnel_target(tunnel)), "host key alias")
    return ["-o", f"HostName={pinned}", "-o", f"HostKeyAlias={alias}"]


def autossh_gate_seconds() -> int:
    """The worker's own limit for a start (connect timeout plus time to authenticate and forward)."""
    return settings.SSH_CONNECT_TIMEOUT + 5


def base_environment(tunnel: Tunnel, node: str) -> dict[str, str]:
    """What every tunnel process gets: a few inherited variables and the marker the scan finds it by."""
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    env.update(
        {
            MARKER_ENV: str(tunnel.uuid),
            DATA_DIR_ENV: str(settings.DATA_DIR),
            NODE_ENV: node,
            GENERATION_ENV: str(tunnel.generation),
        }
    )
    return env


def _environment(tunnel: Tunnel, identity: Identity, node: str) -> dict[str, str]:
    env = base_environment(tunnel, node)
    env.update(
        {
            # An ssh that exits before it could have connected ends autossh too, so each start by
            # the worker is one try: the worker counts failures, backs off and gives up (a port
            # clash must not be retried by autossh behind its back). An ssh killed by a signal,
            # or one that dies after the gate, is still restarted by autossh itself.
            "AUTOSSH_GATETIME": str(autossh_gate_seconds()),
            "AUTOSSH_POLL": str(settings.AUTOSSH_POLL),
        }
    )
    if not tunnel.auto_restart:
        # The user asked for no restarts: autossh runs ssh once and exits with it.
        env["AUTOSSH_MAXSTART"] = "1"
    if identity.ambient_agent and "SSH_AUTH_SOCK" in os.environ:
        env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    return env
