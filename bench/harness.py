"""Shared harness of the HTTP benchmarks (auth.py, api.py, compat.py).

Each benchmark runs the project in its own gunicorn on loopback with a throw-away
data dir and SQLite database, drives it with keep-alive client threads and prints
figures. This module holds the parts they share: the environment, ``manage.py``,
the gunicorn lifecycle and the load generator. What each one measures and prints
stays in its own script.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
# Far above anything the load generator reaches, so no request is throttled.
UNTHROTTLED = "100000000/minute"

# method, path, headers, body: one request of a scenario.
Request = tuple[str, str, dict[str, str], bytes | None]


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options every benchmark has; scripts add their own before parsing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    # One core stays free for gunicorn: more client threads than that measure the client.
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on a fresh database on this PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/x) "
        "instead of SQLite",
    )
    return parser


def bench_env(data_dir: str, extra: Mapping[str, str] | None = None, database_url: str | None = None) -> dict[str, str]:
    """Environment for manage.py and gunicorn: everything lives in ``data_dir``, the database too
    unless ``database_url`` names one (see ``postgres_database``)."""
    env = {
        **os.environ,
        "TUNNELSITE_DATA_DIR": data_dir,
        "TUNNELSITE_THROTTLE_USER": UNTHROTTLED,
        "LOG_LEVEL": "ERROR",  # a warning per 401/404 would cost more than the request
        **(extra or {}),
    }
    # Without DATABASE_URL the settings put SQLite in the data dir, never a real database.
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def manage(env: Mapping[str, str], *args: str) -> str:
    """Run ``manage.py`` and return its stdout; on failure stop with its stderr."""
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {args[0]} failed:\n{done.stderr}")
    return done.stdout


@contextmanager
def postgres_database(server_url: str | None) -> Iterator[str | None]:
    """A fresh, empty PostgreSQL database on ``server_url``'s server for one run, dropped afterwards.

    Yields its URL, or None (SQLite in the data dir) when no server is given.
    """
    if not server_url:
        yield None
        return
    import psycopg  # only the PostgreSQL runs need it

    name = f"bench_{os.getpid()}"
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    # Port 0 lets the kernel pick; the small window until gunicorn binds it is acceptable here.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gunicorn_command(port: int, workers: int, threads: int) -> list[str]:
    return [
        str(Path(PY).parent / "gunicorn"), "tunnelsite.wsgi", "--bind", f"{HOST}:{port}",
        "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
        # gunicorn 27 otherwise opens a control socket shared by all gunicorns in
        # ~/.gunicorn, so benchmarks and test servers running side by side collide.
        "--no-control-socket",
        "--log-level", "warning",
    ]  # fmt: skip


def wait_listening(port: int, proc: subprocess.Popen, probe: tuple[str, str], timeout: float = 20) -> None:
    """Return once a worker answers ``probe`` (method, path).

    The master accepts TCP as soon as it binds, before a worker has imported
    Django, so only a full HTTP answer shows the server is ready to measure.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited early")
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            conn.request(*probe)
            conn.getresponse().read()
            return
        except OSError:  # refused, or no worker answered within the second
            time.sleep(0.1)
        finally:
            conn.close()
    raise SystemExit("gunicorn did not start")


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:  # every process of the group has exited
        return False


def stop(proc: subprocess.Popen) -> None:
    """Stop gunicorn's whole process group (master and workers) by the master's PID."""
    # start_new_session made the master's PID the group id: signalling the group
    # also reaches workers whose master has already died.
    if _signal_group(proc.pid, signal.SIGTERM):
        try:
            proc.wait(timeout=10)  # graceful: the master waits for its workers
            return
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def gunicorn(
    env: Mapping[str, str], data_dir: str, probe: tuple[str, str], workers: int = 1, threads: int = 4
) -> Iterator[int]:
    """Run gunicorn (gthread) on a free loopback port; yield the port once it answers.

    It is stopped when the block exits, also on errors and Ctrl-C.
    """
    port = free_port()
    with open(Path(data_dir) / "gunicorn.log", "w") as log:
        proc = subprocess.Popen(
            gunicorn_command(port, workers, threads), cwd=ROOT, env=env, start_new_session=True, stderr=log
        )
        try:
            wait_listening(port, proc, probe)
            yield port
        finally:
            stop(proc)


@dataclass
class Result:
    rps: float
    p50: float  # ms
    p99: float  # ms
    statuses: dict[int, int]
    size: int  # body bytes of the last response, largest over the client threads


@dataclass
class _Tally:
    """What the client threads collect; merged under the lock as each one finishes."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    sizes: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def merge(self, latencies: list[float], statuses: dict[int, int], size: int) -> None:
        with self.lock:
            self.latencies.extend(latencies)
            self.sizes.append(size)
            for code, count in statuses.items():
                self.statuses[code] = self.statuses.get(code, 0) + count


def _client(port: int, make: Callable[[], Request], stop_at: float, tally: _Tally) -> None:
    # One keep-alive connection per thread; http.client reconnects by itself if
    # the server closes it. Local lists keep the lock out of the timed loop.
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    size = 0
    while time.monotonic() < stop_at:
        method, path, headers, body = make()
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        size = len(response.read())
        latencies.append(time.perf_counter() - started)
        statuses[response.status] = statuses.get(response.status, 0) + 1
    conn.close()
    tally.merge(latencies, statuses, size)


def drive(port: int, make: Callable[[], Request], seconds: float, threads: int) -> Result:
    """Keep-alive clients sending ``make()`` requests for ``seconds``: rps, p50, p99, status counts."""
    tally = _Tally()
    stop_at = time.monotonic() + seconds
    pool = [threading.Thread(target=_client, args=(port, make, stop_at, tally)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    latencies = sorted(tally.latencies)
    return Result(
        rps=len(latencies) / seconds,
        p50=statistics.median(latencies) * 1000,
        p99=latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        statuses=tally.statuses,
        size=max(tally.sizes),
    )


def fixed(method: str, path: str, headers: dict[str, str] | None = None) -> Callable[[], Request]:
    """A scenario that sends the same bodiless request every time."""
    request: Request = (method, path, headers or {}, None)
    return lambda: request


def sshd_and_database(tmp: Path):
    """For the worker benchmarks: a real sshd on loopback, a data dir with a migrated SQLite database under
    ``tmp``, this process's environment pointed at them and Django set up. Returns (server, env)."""
    sys.path.insert(0, str(ROOT))
    from tests import sshd as sshd_mod

    data = tmp / "data"
    data.mkdir()
    server = sshd_mod.start_sshd(tmp / "sshd")
    env = dict(os.environ)
    env.update(
        {
            "TUNNELSITE_DATA_DIR": str(data),
            "DATABASE_URL": f"sqlite:///{data / 'bench.sqlite3'}",
            "SECRET_KEY": "bench-secret-key-not-for-production-0123456789",
            "TUNNELSITE_SSH_IDENTITY": str(server.client_key),
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.update(env)
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tunnelsite.settings")
    import django

    django.setup()
    return server, env
