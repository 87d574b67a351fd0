"""Connection tests (preflight): a one-shot plain ssh made from the tunnel's own command, so a test
uses exactly the tunnel's identity, known_hosts, config and options."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tunnels.models import Tunnel
from tunnels.ssh.command import (
    DATA_DIR_ENV,
    GENERATION_ENV,
    MARKER_ENV,
    NODE_ENV,
    Command,
    _guard,
    forward_spec,
    remote_end,
)
from tunnels.ssh.prepare import command_for

if TYPE_CHECKING:
    from tunnels.agent import Agent

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
