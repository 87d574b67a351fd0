"""SSH servers that ask for a password, for interactive tunnel tests.

``password_sshd``: a real /usr/sbin/sshd on a free loopback port accepting a password
(``PasswordAuthentication yes``, ``KbdInteractiveAuthentication no``, ``UsePAM no``: sshd reads
/etc/shadow itself) for a throw-away system user made for the run, with a random password set
through ``chpasswd`` on its standard input (never in argv). The user is removed (``userdel -r``)
and sshd stopped however the block ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, kill_group, port_open, spawn, wait_for
from tests.sshd import SSHD, keygen


@dataclass
class PasswordServer:
    host: str
    port: int
    user: str
    password: str
    proc: subprocess.Popen
    log: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"


def password_available() -> str | None:
    """None when a password sshd can run here, else why not."""
    if not Path(SSHD).exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "making a throw-away system user needs root"
    for tool in ("useradd", "userdel", "chpasswd"):
        if shutil.which(tool) is None:
            return f"{tool} is not available"
    return None


def _add_user(name: str, password: str) -> None:
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    # The password goes through stdin: argv is readable by every user of the machine.
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True)


def _remove_user(name: str) -> None:
    # -f: even if a session of the user were left (sshd's connection children are killed before this).
    subprocess.run(["userdel", "-r", "-f", name], capture_output=True, check=False)


def _config(workdir: Path, port: int, user: str) -> Path:
    host_key = keygen(workdir / "hostkey")
    config = workdir / "sshd_config"
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        "AuthorizedKeysFile none",
        "PubkeyAuthentication no",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "UsePAM no",
        f"AllowUsers {user}",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "MaxAuthTries 3",
        "LogLevel VERBOSE",
        "",
    ]
    config.write_text("\n".join(lines))
    return config


@contextmanager
def password_sshd(workdir: Path) -> Iterator[PasswordServer]:
    """A started password sshd and its user (the test is skipped where none can run)."""
    import pytest

    reason = password_available()
    if reason:
        pytest.skip(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    user = f"tsw{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    port = free_port()
    proc = None
    try:
        _add_user(user, password)
        config = _config(workdir, port, user)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        log = workdir / "sshd.log"
        proc = spawn([SSHD, "-D", "-f", str(config), "-E", str(log)], workdir / "sshd.out")
        wait_for(lambda: port_open(port), timeout=10, message=f"password sshd on port {port}")
        yield PasswordServer("127.0.0.1", port, user, password, proc, log)
    finally:
        if proc is not None:
            _stop(proc)
        _remove_user(user)


def _stop(proc: subprocess.Popen) -> None:
    """Its connection children first, so the live sshd reaps them; then the listener."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(proc.pid).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(children, timeout=3)
    kill_group(proc)


# --- tunnels through these servers (appended for the two-factor and secret tests) -----------------


def interactive_tunnel(owner, server, target, name: str = "login", pin: str | None = None):
    """An interactive -L tunnel of ``owner`` through ``server`` (a PasswordServer or a
    tests.twofactor_server.TwoFactorServer) to ``target``. ``pin``: a known_hosts line put into the
    owner's known hosts first (through the API, as a user would); None: trust on first use."""
    from tests.conftest import client_for
    from tests.procs import pool_port
    from tunnels import services

    if pin is not None:
        pinned = client_for(owner).post("/api/v1/known-hosts/", {"line": pin}, format="json")
        assert pinned.status_code == 201, pinned.content
    data = {
        "name": f"{name}-{server.port}",
        "remote_host": server.destination,
        "ssh_port": server.port,
        "local_port": str(pool_port()),
        "remote_port": str(target.port),
        "interactive": True,
    }
    return services.create_tunnel(owner, data)


def wait_question(tunnel, question: str, timeout: float = 20.0):
    """The tunnel's pending prompt once it is ``question`` (ssh puts "(user@host) " before a
    keyboard-interactive one); the failure names the tunnel's last state."""
    from tunnels import services

    def asked():
        pending = services.pending_prompt(tunnel)
        return pending if pending is not None and pending.prompt.endswith(question) else None

    try:
        return wait_for(asked, timeout=timeout, message=question)
    except AssertionError:
        tunnel.refresh_from_db()
        raise AssertionError(
            f"no prompt {question!r} within {timeout} s (last: {tunnel.status} {tunnel.last_error!r}, "
            f"pending {services.pending_prompt(tunnel)})"
        ) from None
