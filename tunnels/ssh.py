"""The one place an ssh command line is built.

``build_command`` is a pure function from a tunnel (plus paths) to an argv
list and environment: no shell is ever involved, every user value has been
validated by ``tunnels.validation``, and the destination is placed after
``--`` so it can never be read as an option. ``command_for`` adds the
file-system side (known_hosts per owner, the empty config for non-staff).
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

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


def forward_spec(tunnel: Tunnel) -> tuple[str, str]:
    """('-L', 'lhost:lport:thost:tport') or ('-R', 'rhost:rport:lhost:lport')."""
    local_host, local_port = split_local(tunnel.local_port)
    remote_host, remote_port = split_remote(tunnel.remote_port, default_host="localhost")
    if tunnel.is_forward_local:
        return "-L", f"{_host(local_host)}:{local_port}:{_host(remote_host)}:{remote_port}"
    return "-R", f"{_host(remote_host)}:{remote_port}:{_host(local_host)}:{local_port}"


def _guard(value: str, what: str) -> str:
    # Second line of defence behind validation: nothing user-supplied may look
    # like an option or smuggle a second word.
    if not value or value.startswith("-") or any(ch.isspace() for ch in value) or "\0" in value:
        raise UnsafeCommand(f"refusing unsafe {what}: {value!r}")
    return value


def build_command(
    tunnel: Tunnel,
    *,
    identity: str | Path | None,
    known_hosts: str | Path,
    ssh_config: str | Path | None,
    identities_only: bool = True,
    node: str = "",
) -> tuple[list[str], dict[str, str]]:
    """The autossh argv and environment for ``tunnel`` (pure: touches no files)."""
    destination = _guard(tunnel.remote_host, "destination")
    flag, spec = forward_spec(tunnel)
    _guard(spec, "forward")
    argv = [
        settings.AUTOSSH_BIN,
        "-M",
        "0",
        "-N",
        "-o",
        f"ServerAliveInterval={settings.SSH_SERVER_ALIVE_INTERVAL}",
        "-o",
        f"ServerAliveCountMax={settings.SSH_SERVER_ALIVE_COUNT}",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={settings.SSH_CONNECT_TIMEOUT}",
        # Trust on first use, remembered per owner. Never "no" + /dev/null.
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        # VERBOSE logs "Authenticated to ..." which tells a live -R forward from a connecting one.
        "-o",
        "LogLevel=VERBOSE",
    ]
    if ssh_config:
        argv += ["-F", str(ssh_config)]
    if identity:
        argv += ["-i", str(identity)]
    if identities_only:
        argv += ["-o", "IdentitiesOnly=yes"]
    if tunnel.ssh_port:
        argv += ["-p", str(int(tunnel.ssh_port))]
    argv += [flag, spec, "--", destination]
    env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
    env.update(
        {
            # autossh restarts ssh even when its first run fails; the worker
            # decides when to give up and back off.
            "AUTOSSH_GATETIME": "0",
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
    if not identities_only and "SSH_AUTH_SOCK" in os.environ:
        env["SSH_AUTH_SOCK"] = os.environ["SSH_AUTH_SOCK"]
    return argv, env


# --- files the command refers to -----------------------------------------


def ssh_dir() -> Path:
    return settings.DATA_DIR / "ssh"


def known_hosts_path(tunnel: Tunnel) -> Path:
    return settings.DATA_DIR / "known_hosts" / f"user-{tunnel.owner_id}"


def empty_config_path() -> Path:
    return ssh_dir() / "empty_config"


def identity_for(tunnel: Tunnel) -> str | None:
    """The private key a tunnel authenticates with.

    One server-wide key for now (``TUNNELSITE_SSH_IDENTITY``); per-user
    identities will be looked up here.
    """
    return settings.SSH_IDENTITY or None


def command_for(tunnel: Tunnel, node: str = "") -> tuple[list[str], dict[str, str]]:
    """Prepare the files a tunnel's command needs, then build it.

    Non-staff tunnels get an empty ``-F`` config (never the server's
    ssh_config), ``IdentitiesOnly=yes`` and, without a configured identity, a
    path that does not exist so ssh's default keys in ``~/.ssh`` are not tried.
    Staff tunnels may use ``TUNNELSITE_SSH_CONFIG`` and the ssh agent.
    """
    known_hosts = known_hosts_path(tunnel)
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = identity_for(tunnel)
    if tunnel.owner.is_staff:
        return build_command(
            tunnel,
            identity=identity,
            known_hosts=known_hosts,
            ssh_config=settings.SSH_CONFIG or None,
            identities_only=bool(identity),
            node=node,
        )
    config = empty_config_path()
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.write_text("# Deliberately empty: non-staff tunnels must not use the server's ssh config.\n")
    return build_command(
        tunnel,
        identity=identity or ssh_dir() / "no-identity",
        known_hosts=known_hosts,
        ssh_config=config,
        identities_only=True,
        node=node,
    )
