"""The one place an ssh command line is built.

``build_command`` is a pure function from a tunnel (plus paths) to an argv
list and environment: no shell is ever involved, every user value has been
validated by ``tunnels.validation``, and the destination is placed after
``--`` so it can never be read as an option. ``command_for`` adds the
file-system side (known_hosts per owner, the empty config for non-staff, the
owner's key in the worker's agent). ``redact`` removes this server's paths
from anything a user reads (logs, errors): written once, used everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from tunnels import hostkeys
from tunnels.models import Tunnel
from tunnels.validation import split_local, split_remote

if TYPE_CHECKING:
    from tunnels.agent import Agent

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
    destination = _guard(tunnel.remote_host, "destination")
    flag, spec = forward_spec(tunnel)
    _guard(spec, "forward")
    argv: list[str] = []
    shown: list[str] = []

    def add(*values: str, display: str | None = None) -> None:
        # ``display`` replaces the last value in the logged command line (a path users must not see).
        argv.extend(values)
        shown.extend(values if display is None else (*values[:-1], display))

    add(settings.AUTOSSH_BIN, display=Path(settings.AUTOSSH_BIN).name)
    add("-M", "0", "-N")
    for option in (
        f"ServerAliveInterval={settings.SSH_SERVER_ALIVE_INTERVAL}",
        f"ServerAliveCountMax={settings.SSH_SERVER_ALIVE_COUNT}",
        "ExitOnForwardFailure=yes",
        "BatchMode=yes",
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
    return Command(argv, _environment(tunnel, identity, node), shown)


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


def _environment(tunnel: Tunnel, identity: Identity, node: str) -> dict[str, str]:
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    env.update(
        {
            # An ssh that exits before it could have connected ends autossh too, so each start by
            # the worker is one try: the worker counts failures, backs off and gives up (a port
            # clash must not be retried by autossh behind its back). An ssh killed by a signal,
            # or one that dies after the gate, is still restarted by autossh itself.
            "AUTOSSH_GATETIME": str(autossh_gate_seconds()),
            "AUTOSSH_POLL": str(settings.AUTOSSH_POLL),
            MARKER_ENV: str(tunnel.uuid),
            DATA_DIR_ENV: str(settings.DATA_DIR),
            NODE_ENV: node,
            GENERATION_ENV: str(tunnel.generation),
        }
    )
    if not tunnel.auto_restart:
        # The user asked for no restarts: autossh runs ssh once and exits with it.
        env["AUTOSSH_MAXSTART"] = "1"
    if identity.ambient_agent and "SSH_AUTH_SOCK" in os.environ:
        env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    return env


# --- files the command refers to -----------------------------------------


def ssh_dir() -> Path:
    return settings.DATA_DIR / "ssh"


def known_hosts_path(tunnel: Tunnel) -> Path:
    return hostkeys.path_for(tunnel.owner_id)


def empty_config_path() -> Path:
    return ssh_dir() / "empty_config"


def identity_for(tunnel: Tunnel, agent: Agent | None = None) -> Identity:
    """How ``tunnel`` authenticates. Loads its key into ``agent`` (``agent.ensure``) when it has one.

    Raises ``NoKey`` for a non-staff tunnel without a key, ``KeyUnusable`` /
    ``AgentError`` (tunnels.agent) when the key cannot be put in the agent.
    """
    key = tunnel.ssh_key if tunnel.ssh_key_id else None
    if key is not None:
        if agent is None:
            raise ValueError("a tunnel with an SSH key needs the worker's agent")
        public = agent.ensure(key)
        return Identity(agent=str(agent.socket), public_key=str(public), key_name=key.name)
    if not tunnel.owner.is_staff:
        raise NoKey(NO_KEY_ERROR)
    if settings.SSH_IDENTITY:
        return Identity(server_key=str(settings.SSH_IDENTITY))
    return Identity(ambient_agent=True)


def command_for(tunnel: Tunnel, node: str = "", agent: Agent | None = None, *, address: str | None = None) -> Command:
    """Prepare the files a tunnel's command needs, then build it (the worker and the connection test).

    Non-staff tunnels get an empty ``-F`` config (never the server's
    ssh_config) and only their own key, through ``agent``. Staff tunnels may
    use ``TUNNELSITE_SSH_CONFIG``, the server key and the worker's own agent.
    """
    identity = identity_for(tunnel, agent)
    known_hosts = known_hosts_path(tunnel)
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if tunnel.owner.is_staff:
        config = settings.SSH_CONFIG or None
    else:
        config = empty_config_path()
        if not config.exists():
            config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            config.write_text("# Deliberately empty: non-staff tunnels must not use the server's ssh config.\n")
    return build_command(
        tunnel, identity=identity, known_hosts=known_hosts, ssh_config=config, node=node, address=address
    )


# --- what users may read ---------------------------------------------------

_PATH_END = r"[^\s'\"`,;:)]*"  # ssh writes "path:line" and quotes paths


def _runtime_pattern() -> re.Pattern[str]:
    # Literal prefixes only: a leading "any path" class would backtrack quadratically over a long log line.
    bases = {"/tmp", os.environ.get("XDG_RUNTIME_DIR", "").rstrip("/")} - {""}  # noqa: S108
    alternatives = "|".join(re.escape(base) for base in sorted(bases)) + r"|/run/user/\d+"
    return re.compile(f"(?:{alternatives})/tunnelsite-[0-9a-f]{{16}}(?:/{_PATH_END})?")


def redact(text: str) -> str:
    """``text`` (ssh's output, a log, an error) without this server's paths.

    The data dir (key files, known_hosts, config), the agent's runtime dir,
    the server key and config and the worker's home become placeholders, so
    a user learns nothing about the server's layout or other users' ids.
    """
    if not text:
        return text
    data = re.escape(str(settings.DATA_DIR).rstrip("/"))
    rules: list[tuple[str, str]] = [
        (data + r"/ssh/pub/" + _PATH_END, "<key>"),
        (data + r"/known_hosts/" + _PATH_END, "<known_hosts>"),
        (data + r"/ssh/empty_config\b", "<ssh_config>"),
        (data + _PATH_END, "<data>"),
    ]
    for path, placeholder in ((settings.SSH_IDENTITY, "<server key>"), (settings.SSH_CONFIG, "<ssh_config>")):
        if path:
            rules.insert(0, (re.escape(str(path)) + _PATH_END, placeholder))
    home = os.path.expanduser("~").rstrip("/")
    if home:
        rules.append((re.escape(home) + r"(?=/)" + _PATH_END, "<home>"))
    text = _runtime_pattern().sub("<agent>", text)
    for pattern, placeholder in rules:
        text = re.sub(pattern, placeholder, text)
    return text


def redact_for(user, text: str) -> str:
    """``text`` as ``user`` may read it: staff see the server's paths, everybody else placeholders."""
    return text if getattr(user, "is_staff", False) else redact(text)


# --- connection tests (preflight) ------------------------------------------
# A one-shot plain ssh made from the tunnel's own command, so a test uses
# exactly the tunnel's identity, known_hosts, config and options.

PREFLIGHT_CONNECT_TIMEOUT = 5
# Keys of a tunnel's environment a test must not carry: with the marker the
# reconciler's scan would take the test's ssh for a leftover of the tunnel.
_TUNNEL_ONLY_ENV = (MARKER_ENV, DATA_DIR_ENV, NODE_ENV, GENERATION_ENV)


def ssh_bin() -> str:
    """The ssh autossh runs (autossh honours ``AUTOSSH_PATH`` the same way)."""
    return os.environ.get("AUTOSSH_PATH") or "ssh"


def preflight_command(
    tunnel: Tunnel,
    *,
    agent: Agent | None = None,
    stdio: bool = False,
    spare_remote_port: bool = False,
    address: str | None = None,
) -> Command:
    """A plain ``ssh`` with the tunnel's settings (``command_for``) that exits on the first failure.

    Our options go first because ssh keeps the first value it reads for an
    option: ``LogLevel=DEBUG2`` prints "Authenticated to", "remote forward
    success/failure" and, for ``-W``, "open confirm"/"open failed".
    ``stdio`` replaces an -L forward with ``-W target``, so the test binds
    nothing locally; ``spare_remote_port`` asks for port 0 in an -R forward.
    Raises what ``command_for`` raises (``NoKey``, the agent's errors).
    """
    tunnel_command = command_for(tunnel, agent=agent, address=address)
    start = tunnel_command.argv.index("-N") + 1  # drop "autossh -M 0 -N"
    argv, shown = tunnel_command.argv[start:], tunnel_command.display_argv[start:]
    end = argv.index("--")
    flag_at = max(i for i in range(end) if argv[i] in ("-L", "-R"))
    if stdio:
        # An -L tunnel's target as -W takes it.
        argv[flag_at : flag_at + 2] = shown[flag_at : flag_at + 2] = ["-W", _guard(remote_end(tunnel), "target")]
    elif spare_remote_port and argv[flag_at] == "-R":
        # Port 0 (the server picks one): forwarding is tested while the running tunnel holds the real port.
        argv[flag_at + 1] = shown[flag_at + 1] = _guard(forward_spec(tunnel, remote_port=0)[1], "forward")
    ours = ["-N", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes"]
    ours += ["-o", f"ConnectTimeout={PREFLIGHT_CONNECT_TIMEOUT}", "-o", "LogLevel=DEBUG2"]
    env = {
        key: value
        for key, value in tunnel_command.env.items()
        if key not in _TUNNEL_ONLY_ENV and not key.startswith("AUTOSSH_")
    }
    return Command([ssh_bin(), *ours, *argv], env, ["ssh", *ours, *shown])


def config_query_command(argv: list[str]) -> list[str]:
    """``ssh -G`` with the same options: prints the host and port ssh would connect to."""
    return [argv[0], "-G", *argv[1:]]
