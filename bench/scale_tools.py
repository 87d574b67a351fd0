"""Helpers of bench/scale.py and bench/scale_failover.py: the machine, sshd, the target, the worker
subprocess, the floor (bare ssh) and waiting for tunnels. What each measures stays in its script."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GREETING = b"scale-bench-target\n"
# Local ports below Linux's ephemeral range (32768+), which ssh's own outgoing connections use.
PORT_LOW, PORT_HIGH = 20000, 32767
NODE = "bench-scale"


# --- the machine -----------------------------------------------------------


def raise_nofile() -> int:
    """Soft open-files limit up to the hard one (the worker, sshd and every tunnel inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def local_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 between PORT_LOW and PORT_HIGH, from the bottom every time
    (a size reuses the ports the previous one released)."""
    found = []
    for port in range(PORT_LOW, PORT_HIGH + 1):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT does not hold a listener
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise SystemExit(f"only {len(found)} free ports in {PORT_LOW}-{PORT_HIGH}, {count} needed")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def carries(port: int) -> bool:
    """Traffic through the forward: the target's greeting comes back (ssh accepts before it connects)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            data = b""
            while len(data) < len(GREETING):
                chunk = sock.recv(64)
                if not chunk:
                    break
                data += chunk
            return data == GREETING
    except OSError:
        return False


class Target:
    """A loopback server that greets and closes: what every forward points at."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.sendall(GREETING)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --- sshd and the environment ---------------------------------------------------


def start_sshd(workdir: Path, max_startups: int):
    """tests/sshd.py's server, restarted with ``MaxStartups`` and ``MaxSessions`` high enough for the floor."""
    from tests import sshd as sshd_mod
    from tests.procs import port_open, spawn, wait_for

    server = sshd_mod.start_sshd(workdir)
    sshd_mod.stop_sshd(server)
    config = workdir / "sshd_config"
    lines = [line for line in config.read_text().splitlines() if not line.startswith(("MaxStartups", "MaxSessions"))]
    lines += [f"MaxStartups {max_startups}", "MaxSessions 100", "LogLevel INFO", ""]
    config.write_text("\n".join(line for line in lines if line != "LogLevel VERBOSE"))
    server.proc = spawn([sshd_mod.SSHD, "-D", "-f", str(config), "-E", str(server.log)], workdir / "sshd.out")
    wait_for(lambda: port_open(server.port), timeout=10, message="sshd")
    return server


def setup(tmp: Path, extra: dict[str, str]) -> dict[str, str]:
    """A data dir with a migrated SQLite database, this process's environment pointed at it, Django set up."""
    data = tmp / "data"
    data.mkdir()
    env = {
        "TUNNELSITE_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'bench.sqlite3'}",
        "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
        "LOG_LEVEL": "WARNING",
        "TUNNELSITE_PORT_RANGE": f"{PORT_LOW}-{PORT_HIGH}",
        # The sshd and the targets are on loopback, which the network policy denies by default.
        "TUNNELSITE_SSH_DESTINATIONS_ALLOW": "127.0.0.0/8",
        "TUNNELSITE_ALLOWED_TARGETS": "127.0.0.0/8:1024-65535",
        **extra,
    }
    os.environ.update(env)
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=dict(os.environ), check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunnelsite.settings")
    import django

    django.setup()
    return dict(os.environ)


# --- the worker ------------------------------------------------------------------


@dataclass
class Worker:
    env: dict[str, str]
    log: Path
    node: str = NODE
    proc: subprocess.Popen | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> Worker:
        from tunnels.models import WorkerNode

        began = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "manage.py", "tunnel_worker", "--node", self.node],
                cwd=ROOT, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs.append(self.proc)
        deadline = time.monotonic() + 30
        while not WorkerNode.objects.filter(name=self.node, last_seen__gte=_aware(began)).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start; see {self.log}")
            time.sleep(0.05)
        return self

    def kill9(self) -> None:
        """A crash: the worker's own group only (tunnels run in sessions of their own)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def cleanup(self) -> None:
        from tests.procs import kill_group

        for proc in self.procs:
            kill_group(proc, grace=10)

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def settle(self, quiet: float = 5.0, timeout: float = 120.0) -> None:
        """Wait until the worker uses less than ``quiet`` % CPU over two half-second windows."""
        import psutil

        proc = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + timeout
        calm = 0
        proc.cpu_percent(None)
        while calm < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            calm = calm + 1 if proc.cpu_percent(None) < quiet else 0


def _aware(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


# --- waiting for tunnels ---------------------------------------------------------


@dataclass
class Up:
    done: dict[int, float]  # tunnel pk -> seconds until running and carrying traffic
    first_running: float | None
    troubled: set[int]  # tunnels seen failed or in back-off
    elapsed: float


def wait_up(owner, ports: dict[int, int], began: float, check, timeout: float) -> Up:
    """Poll until every tunnel of ``owner`` is ``running`` and ``check(port)`` passes (or ``timeout``)."""
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from tunnels.models import Status, Tunnel

    done: dict[int, float] = {}
    troubled: set[int] = set()
    running: set[int] = set()  # seen running, not carrying traffic yet
    first = None
    since = None
    # Only the rows that changed since the last look (and the running ones not through yet): a query of
    # every tunnel every 20 ms was a quarter of this machine's CPU over a start-all of 1,000 beside the
    # floor's cheap connect attempts.
    sentinel = timezone.now() - timedelta(days=1)
    watched = Tunnel.objects.filter(
        owner=owner, status__in=(Status.RUNNING, Status.FAILED, Status.BACKOFF), status_changed_at__gte=sentinel
    ).order_by()
    sql, params = watched.values_list("pk", "status").query.sql_with_params()
    params = list(params)
    adapt = connection.ops.adapt_datetimefield_value  # (as the ORM passes a datetime to this database)
    at = params.index(adapt(sentinel))
    while len(done) < len(ports) and time.monotonic() - began < timeout:
        params[at] = adapt(since if since is not None else sentinel)
        since = timezone.now() - timedelta(seconds=1)  # rows written up to a second before the look
        with connection.cursor() as cursor:  # the query built once (an ORM query costs more than the read)
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for pk, status in rows:
            if status == Status.RUNNING:
                running.add(pk)
            else:
                troubled.add(pk)
                running.discard(pk)
        fresh = False
        for pk in list(running - done.keys()):
            if first is None:
                first = time.monotonic() - began
            if check(ports[pk]):
                done[pk] = time.monotonic() - began
                fresh = True
        if not fresh:
            time.sleep(0.02)
    return Up(done, first, troubled, time.monotonic() - began)


def wait_floor(spawn, ports: list[int], began: float, timeout: float) -> tuple[dict[int, float], int]:
    """Until every port carries traffic; an ssh that exits first is started again, as autossh would
    (sshd may drop a connection under load). Returns (seconds per port, restarts)."""
    procs = {port: spawn(port) for port in ports}
    done: dict[int, float] = {}
    restarts = 0
    try:
        while len(done) < len(ports) and time.monotonic() - began < timeout:
            for port, proc in procs.items():
                if port in done:
                    continue
                if carries(port):
                    done[port] = time.monotonic() - began
                elif proc.poll() is not None:
                    procs[port] = spawn(port)
                    restarts += 1
            if len(done) < len(ports):
                time.sleep(0.02)
    finally:
        stop_popens(list(procs.values()))
    return done, restarts


def floor(server, ports: list[int], target: Target, tmp: Path, timeout: float) -> tuple[float | None, str]:
    """N bare ``ssh -N -L`` at once (the worker's options, a known_hosts that already trusts the server),
    until every forward carries traffic: (seconds, or None on timeout; what happened in words)."""
    known = tmp / "floor_known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {server.host_key_pub.read_text().strip()}\n")
    options = ["ExitOnForwardFailure=yes", "BatchMode=yes", "StrictHostKeyChecking=yes",
               f"UserKnownHostsFile={known}", "GlobalKnownHostsFile=none", "IdentitiesOnly=yes",
               "ServerAliveInterval=30", "ConnectTimeout=15"]  # fmt: skip
    base = ["ssh", "-N", *(x for option in options for x in ("-o", option)), "-i", str(server.client_key)]
    with open(tmp / "floor.log", "ab") as log:  # ssh's complaints, if any, for a failed floor

        def spawn(port: int) -> subprocess.Popen:
            argv = [*base, "-p", str(server.port), "-L", f"127.0.0.1:{port}:127.0.0.1:{target.port}"]
            return subprocess.Popen(
                [*argv, "--", server.destination],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip

        began = time.monotonic()
        done, restarts = wait_floor(spawn, ports, began, timeout)
    seconds = max(done.values()) if len(done) == len(ports) else None
    note = f", {restarts} ssh restarted" if restarts else ""
    return seconds, (f"{seconds:.2f} s" if seconds else f"only {len(done)}/{len(ports)} in time") + note


def stop_popens(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 5
    for proc in procs:
        try:
            proc.wait(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
