"""Fixtures that run the real tunnel worker against the test database.

``worker`` starts ``manage.py tunnel_worker`` as a subprocess (own session)
pointed at the database pytest-django created, the test's data dir and the
test sshd's client key. Teardown kills the worker's process group and every
tunnel process of this test's data dir, by PID/process group, even when the
test failed. ``target_server`` is a small HTTP server for traffic tests.
"""

from __future__ import annotations

import itertools
import os
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from tests.procs import free_port, kill_group, pool_port, spawn, wait_for
from tunnels.agent import kill_agents

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"
_names = itertools.count(1)

# Fast settings for tests: a short lease and resync, quick retries.
WORKER_TEST_ENV = {
    "TUNNELSITE_WORKER_LEASE": "3",
    "TUNNELSITE_WORKER_RESYNC": "1",
    "TUNNELSITE_WORKER_BACKOFF_BASE": "0.3",
    "TUNNELSITE_WORKER_BACKOFF_MAX": "2",
    "TUNNELSITE_SSH_CONNECT_TIMEOUT": "3",
    "TUNNELSITE_AUTOSSH_POLL": "30",
    "LOG_LEVEL": "INFO",
}


def sshd_tunnel_data(sshd, **overrides) -> dict:
    """A tunnel config that goes through the test sshd."""
    data = {
        "name": f"e2e-{os.getpid()}-{next(_names)}",
        "remote_host": sshd.destination,
        "ssh_port": sshd.port,
        "local_port": str(pool_port()),
        "remote_port": str(free_port()),
    }
    data.update(overrides)
    return data


def database_url() -> str:
    """The URL of the test database pytest-django created (the worker must use the same one)."""
    config = connection.settings_dict
    if config["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(config['NAME']).resolve()}"
    user = config.get("USER") or "postgres"
    password = f":{config['PASSWORD']}" if config.get("PASSWORD") else ""
    host = config.get("HOST") or "127.0.0.1"
    port = config.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{config['NAME']}"


def worker_env(sshd, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WORKER_TEST_ENV)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "TUNNELSITE_DATA_DIR": str(django_settings.DATA_DIR),
            "SECRET_KEY": django_settings.SECRET_KEY,
            "TUNNELSITE_SSH_IDENTITY": str(sshd.client_key),
            "PYTHONUNBUFFERED": "1",
            # The network policy this test runs with (tests/conftest.py sets it per test).
            "TUNNELSITE_SSH_DESTINATIONS_ALLOW": ",".join(django_settings.SSH_DESTINATIONS_ALLOW),
            "TUNNELSITE_SSH_DESTINATIONS_DENY": ",".join(django_settings.SSH_DESTINATIONS_DENY),
            "TUNNELSITE_ALLOWED_TARGETS": ",".join(django_settings.ALLOWED_TARGETS),
        }
    )
    env.update(extra or {})
    return env


@dataclass
class WorkerHandle:
    node: str
    env: dict[str, str]
    log: Path
    interval: float = 0.1
    args: list[str] = field(default_factory=list)
    proc: object = None
    history: list = field(default_factory=list)

    def start(self, wait: bool = True) -> WorkerHandle:
        from django.utils import timezone

        since = timezone.now()
        argv = [
            sys.executable,
            str(MANAGE),
            "tunnel_worker",
            "--node",
            self.node,
            "--interval",
            str(self.interval),
            *self.args,
        ]
        self.proc = spawn(argv, self.log, env=self.env, cwd=MANAGE.parent)
        self.history.append(self.proc)
        if wait:
            self.wait_heartbeat(since)
        return self

    def wait_heartbeat(self, since) -> None:
        from tunnels.models import WorkerNode

        def beating():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_text()}")
            return WorkerNode.objects.filter(name=self.node, last_seen__gte=since).exists()

        wait_for(beating, timeout=20, message=f"worker {self.node} heartbeat")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown: tunnels are left running)."""
        if self.proc is not None:
            kill_group(self.proc, grace=10)

    def kill(self) -> None:
        """SIGKILL the worker (a crash); its tunnels keep running."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def kill_tunnel_processes(data_dir: Path) -> None:
    """Stop every autossh/ssh whose environment names ``data_dir``."""
    from tunnels import processes

    for found in processes.Scanner(data_dir).scan().values():
        for item in found:
            pids = [(item.pid, item.create_time), *((pid, None) for pid in item.ssh_pids)]
            processes.stop_group(item.pgid, pids)


def worker_handle(
    sshd, node: str | None = None, extra_env: dict[str, str] | None = None, args: list[str] | None = None
) -> WorkerHandle:
    node = node or f"test-node-{os.getpid()}-{next(_names)}"
    log = Path(django_settings.DATA_DIR) / f"worker-{node}.log"
    return WorkerHandle(node=node, env=worker_env(sshd, extra_env), log=log, args=list(args or []))


@pytest.fixture
def worker_factory(transactional_db, sshd, settings):
    """Start workers (``worker_factory(node=..., extra_env=..., args=[...])``); all are killed with their
    tunnels at teardown."""
    from tunnels import processes

    # Tunnels outlive a killed worker; re-parented to this test process they can be reaped here.
    processes.become_subreaper()
    handles: list[WorkerHandle] = []

    def make(
        node: str | None = None, extra_env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> WorkerHandle:
        handle = worker_handle(sshd, node, extra_env, args)
        handles.append(handle)  # registered before starting: a worker that fails to beat is still killed
        return handle.start()

    yield make
    for handle in handles:
        for proc in handle.history:
            kill_group(proc, grace=5)
    kill_tunnel_processes(settings.DATA_DIR)
    kill_agents(settings.DATA_DIR)  # the workers' ssh-agents outlive them by design
    # Tunnels whose worker died were re-parented here; leave no zombie behind, then stop adopting orphans.
    processes.reap_zombie_tunnels()
    processes.become_subreaper(False)


@pytest.fixture
def agent(settings):
    """A real ssh-agent for this test's data dir (tunnels.agent.Agent), killed by PID at teardown."""
    from tunnels.agent import Agent

    handle = Agent(node="test-agent")
    yield handle
    handle.stop()
    kill_agents(settings.DATA_DIR)


def make_key(user, name: str = "office-laptop", **fields):
    """A generated SshKey of ``user``, saved (as the keys service will make them)."""
    from tunnels import sshkeys

    key = sshkeys.build(user, name, sshkeys.new_private_key(), comment=sshkeys.default_comment(user, name))
    for field_name, value in fields.items():
        setattr(key, field_name, value)
    key.save()
    return key


def attach_key(tunnel, key) -> None:
    """Attach ``key`` to ``tunnel`` through the ORM (bumping the generation and waking the worker)."""
    from django.db.models import F

    from tunnels import services
    from tunnels.models import Tunnel

    Tunnel.objects.filter(pk=tunnel.pk).update(ssh_key=key, generation=F("generation") + 1)
    services.bump_marker()
    tunnel.refresh_from_db()


@pytest.fixture
def owner_key(transactional_db, owner, sshd):
    """``owner``'s SSH key, accepted by the session sshd while the test runs."""
    key = make_key(owner)
    sshd.authorize(key.public_key)
    yield key
    sshd.revoke(key.public_key)


@pytest.fixture
def worker(worker_factory):
    """One running worker (``.proc``, ``.node``, ``.log``, ``stop()``, ``kill()``, ``start()``)."""
    return worker_factory()


# --- a target for traffic -------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            self.request.recv(65536)
            body = f"hello from target {self.server.server_address[1]}".encode()
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass


class TargetServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def greeting(self) -> str:
        return f"hello from target {self.port}"


def start_target() -> TargetServer:
    server = TargetServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def silent_server():
    """A TCP port on loopback that takes connections and never speaks (no SSH banner): a hanging server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def target_server():
    """An HTTP server on a free loopback port answering ``hello from target <port>``."""
    server = start_target()
    yield server
    server.shutdown()
    server.server_close()


def fetch(port: int, host: str = "127.0.0.1", timeout: float = 3.0) -> str:
    """Send a GET to ``host:port`` and return the body ('' when nothing answered)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).partition(b"\r\n\r\n")[2].decode(errors="replace")


def wait_fetch(port: int, expected: str, timeout: float = 10.0) -> str:
    return wait_for(lambda: expected in fetch(port, timeout=1.0) and expected, timeout=timeout, message=f"{expected!r}")


def wait_status(tunnel, *statuses: str, timeout: float = 10.0):
    """Wait until ``tunnel`` (re-read from the database) has one of ``statuses``."""

    def reached():
        tunnel.refresh_from_db()
        return tunnel.status in statuses

    wait_for(reached, timeout=timeout, message=f"status in {statuses} (last: {tunnel.status} {tunnel.last_error})")
    return tunnel


def wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    import psutil

    def gone():
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    wait_for(gone, timeout=timeout, message=f"processes {pids} gone")
