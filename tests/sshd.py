"""A real OpenSSH server on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, kill_group, port_open, spawn, wait_for

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key accepted by this server
    host_key_pub: Path
    proc: subprocess.Popen
    log: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    @property
    def authorized_keys(self) -> Path:
        return self.client_key.parent / "authorized_keys"

    def authorize(self, line: str) -> None:
        with open(self.authorized_keys, "a") as handle:
            handle.write(line.strip() + "\n")

    def revoke(self, line: str) -> None:
        kept = [entry for entry in self.authorized_keys.read_text().splitlines() if entry.strip() != line.strip()]
        self.authorized_keys.write_text("".join(f"{entry}\n" for entry in kept))


def stop_sshd(server: SshServer) -> None:
    """Kill connection children first, so the live sshd reaps them (no orphaned zombies)."""
    import psutil

    try:
        children = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=3)
    kill_group(server.proc)


def available() -> str | None:
    """None when a real sshd can run here, else why not."""
    if not Path(SSHD).exists():
        return "openssh-server is not installed (apt-get install openssh-server)"
    if shutil.which("autossh") is None:
        return "autossh is not installed (apt-get install autossh)"
    return None


def start_sshd(workdir: Path) -> SshServer:
    workdir.mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "hostkey")
    client_key = keygen(workdir / "client_key")
    (workdir / "authorized_keys").write_text((workdir / "client_key.pub").read_text())
    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {workdir / 'sshd.pid'}",
                f"AuthorizedKeysFile {workdir / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin yes",
                "AllowTcpForwarding yes",
                "GatewayPorts no",
                "MaxStartups 100:30:200",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    log = workdir / "sshd.log"
    proc = spawn([SSHD, "-D", "-f", str(config), "-E", str(log)], workdir / "sshd.out")
    try:
        wait_for(lambda: port_open(port), timeout=10, message=f"sshd on port {port}")
    except AssertionError:
        kill_group(proc)
        raise AssertionError(f"sshd did not start: {log.read_text() if log.exists() else ''}") from None
    return SshServer("127.0.0.1", port, getpass.getuser(), client_key, workdir / "hostkey.pub", proc, log)


def restart_with_new_host_key(server: SshServer) -> SshServer:
    """Stop ``server``, give it a new host key, start it again on the same port (a re-installed server)."""
    workdir = server.log.parent
    stop_sshd(server)
    for name in ("hostkey", "hostkey.pub"):
        (workdir / name).unlink()
    keygen(workdir / "hostkey")
    server.proc = spawn([SSHD, "-D", "-f", str(workdir / "sshd_config"), "-E", str(server.log)], workdir / "sshd.out")
    wait_for(lambda: port_open(server.port), timeout=10, message=f"sshd back on port {server.port}")
    return server


@contextmanager
def running_sshd(workdir: Path) -> Iterator[SshServer]:
    """A started sshd for a fixture (the test is skipped where none can run), stopped however it ends."""
    import pytest

    reason = available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(workdir)
    try:
        yield server
    finally:
        stop_sshd(server)
