"""The file-system side of a tunnel's command: known_hosts per owner, the empty config for
non-staff, the owner's key in the worker's agent; then ``build_command``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from tunnels import hostkeys
from tunnels.models import Tunnel
from tunnels.ssh.command import NO_KEY_ERROR, Command, Identity, NoKey, build_command

if TYPE_CHECKING:
    from tunnels.agent import Agent


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
    known_hosts, config = prepare_files(tunnel)
    return build_command(
        tunnel, identity=identity, known_hosts=known_hosts, ssh_config=config, node=node, address=address
    )


def prepare_files(tunnel: Tunnel) -> tuple[Path, Path | str | None]:
    """The owner's known_hosts path (its directory made) and the ``-F`` config: the empty one for non-staff."""
    known_hosts = known_hosts_path(tunnel)
    known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if tunnel.owner.is_staff:
        return known_hosts, settings.SSH_CONFIG or None
    config = empty_config_path()
    if not config.exists():
        config.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        config.write_text("# Deliberately empty: non-staff tunnels must not use the server's ssh config.\n")
    return known_hosts, config
