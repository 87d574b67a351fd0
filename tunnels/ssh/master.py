"""An interactive tunnel's process: plain ``ssh`` as a control master in the foreground.

Not autossh: its reconnect loop would replay a password (and could lock the account). The master
runs with ``ControlPersist=no`` on purpose: a backgrounded master (``ControlPersist=yes``) would
leave the worker's process group, so its exit status, log and pidfd exit watching would be lost;
in the foreground it is supervised like an autossh process, and ``-O check``/``-O exit`` through
its control socket serve supervision and stops. Every prompt goes to the askpass helper
(``tunnels.ssh.askpass``); argv and environment carry no secret: only the helper's path, the
broker's socket and a per-attempt nonce.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from tunnels.models import Tunnel
from tunnels.ssh.askpass import NONCE_ENV, SOCKET_ENV
from tunnels.ssh.command import KIND_ENV, Argv, Command, Identity, base_environment, tunnel_options
from tunnels.ssh.preflight import ssh_bin
from tunnels.ssh.prepare import prepare_files

if TYPE_CHECKING:
    from tunnels.agent import Agent

MASTER = "master"  # KIND_ENV's value: the scan adopts it as a tunnel's process (not an orphan ssh)
# sun_path holds 108 bytes; ssh binds the master's socket under a name 17 characters longer first.
SUN_PATH_MAX = 107
SSH_TEMP_SUFFIX = 17
CONTROL_TIMEOUT = 5.0  # seconds for one ``ssh -O check|exit``


class RuntimeDirError(OSError):
    """The runtime dir exists but is not a private directory of this user."""


def runtime_dir(data_dir: Path | str | None = None) -> Path:
    """The 0700 dir of the control sockets and the broker's socket: short (sun_path), deterministic per
    data dir so a restarted worker finds its masters again."""
    data_dir = str(data_dir or settings.DATA_DIR)
    digest = hashlib.sha256(f"{data_dir}\0interactive".encode()).hexdigest()[:16]
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"  # noqa: S108 - a private 0700 dir, checked by ensure_private
    if len(base) + 17 + 1 + 40 + SSH_TEMP_SUFFIX > SUN_PATH_MAX:
        base = "/tmp"  # noqa: S108 - same checks; a long XDG_RUNTIME_DIR would not fit sun_path
    return Path(base) / f"tunnelsite-{digest}"


def ensure_private(path: Path) -> Path:
    """Create ``path`` 0700, or check an existing one (lstat: no symlink) is this user's directory and 0700."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise RuntimeDirError(f"{path} is not a directory of this user; refusing to put sockets there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def control_path(tunnel: Tunnel, data_dir: Path | str | None = None) -> Path:
    """The master's control socket, named by the tunnel (a restarted worker knows it without asking)."""
    return runtime_dir(data_dir) / f"{tunnel.uuid.hex}.ctl"


def master_identity(tunnel: Tunnel, agent: Agent | None) -> Identity:
    """The tunnel's own key when it has one (offered first); otherwise none at all: a password
    login never falls back to the server's key or the worker's agent."""
    if tunnel.ssh_key_id:
        if agent is None:
            raise ValueError("a tunnel with an SSH key needs the worker's agent")
        public = agent.ensure(tunnel.ssh_key)
        return Identity(agent=str(agent.socket), public_key=str(public), key_name=tunnel.ssh_key.name)
    return Identity()


def build_master_command(
    tunnel: Tunnel,
    *,
    identity: Identity,
    known_hosts: str | Path,
    ssh_config: str | Path | None,
    control: Path,
    askpass: Path,
    broker: Path,
    nonce: str,
    node: str = "",
    address: str | None = None,
) -> Command:
    """The master's argv and environment (pure). Ours go first: ssh keeps an option's first value."""
    if len(str(control)) + SSH_TEMP_SUFFIX > SUN_PATH_MAX:
        raise ValueError(f"control socket path too long for a Unix socket: {len(str(control))} bytes")
    methods = "keyboard-interactive,password"
    if identity.agent or identity.server_key:
        methods = f"publickey,{methods}"
    line = Argv()
    line.add(ssh_bin(), display="ssh")
    line.add("-M", "-S", str(control), display="<control>")
    line.add("-N")
    for option in (
        "ControlPersist=no",  # in the foreground: see the module's docstring
        "NumberOfPasswordPrompts=1",  # one try per attempt: never a guessing loop against the account
        f"PreferredAuthentications={methods}",
        "KbdInteractiveAuthentication=yes",
        "PasswordAuthentication=yes",
    ):
        line.add("-o", option)
    tunnel_options(
        line.add,
        tunnel,
        identity=identity,
        known_hosts=known_hosts,
        ssh_config=ssh_config,
        address=address,
        batch=False,
    )
    env = base_environment(tunnel, node)
    env.update(
        {
            KIND_ENV: MASTER,
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",  # no terminal, no DISPLAY needed (OpenSSH >= 8.4)
            SOCKET_ENV: str(broker),
            NONCE_ENV: nonce,
        }
    )
    return Command(line.argv, env, line.shown)


def master_command(
    tunnel: Tunnel,
    *,
    node: str,
    agent: Agent | None,
    askpass: Path,
    broker: Path,
    nonce: str,
    address: str | None = None,
) -> Command:
    """Prepare the files (known_hosts, config, runtime dir, the key in the agent), then build the master."""
    identity = master_identity(tunnel, agent)
    known_hosts, config = prepare_files(tunnel)
    control = control_path(tunnel)
    ensure_private(control.parent)
    with contextlib.suppress(FileNotFoundError):
        control.unlink()  # a dead master's socket would make ssh refuse to listen there
    return build_master_command(
        tunnel,
        identity=identity,
        known_hosts=known_hosts,
        ssh_config=config,
        control=control,
        askpass=askpass,
        broker=broker,
        nonce=nonce,
        node=node,
        address=address,
    )


def control_command(control: Path, operation: str) -> list[str]:
    """``ssh -O check|exit`` through ``control``: no config read, no prompt, no user value."""
    if operation not in ("check", "exit"):
        raise ValueError(f"unknown control operation {operation!r}")
    return [ssh_bin(), "-F", "none", "-o", "BatchMode=yes", "-S", str(control), "-O", operation, "--", "tunnelsite"]


def control(control_socket: Path, operation: str) -> bool:
    """Run ``ssh -O operation``; True when the master answered (0 exit status)."""
    if not control_socket.exists():
        return False
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    try:
        result = subprocess.run(
            control_command(control_socket, operation),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=env,
            timeout=CONTROL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
