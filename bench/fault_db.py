"""Database faults of bench/faults.py: a throw-away PostgreSQL cluster that can be stopped, a SQLite
write lock held by another process, and the requests each row sends while the database is away."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faultstack import PY, Answer, Stack, Tunnel, health, request


class Cluster:
    """A PostgreSQL cluster of this run's own (initdb in a temp dir, on a port of the bench's block, run
    as the postgres user): never the shared server on 5432. Removed with its files on exit."""

    def __init__(self, port: int) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found or os.geteuid() != 0:
            raise RuntimeError("needs root and /usr/lib/postgresql/*/bin (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="bench-faults-pg-"))
        self.url = f"postgres://postgres@127.0.0.1:{port}/tunnelsite"

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)

    def __enter__(self) -> Cluster:
        shutil.chown(self.dir, "postgres", "postgres")
        try:
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.dir / "db"), "-U", "postgres", "-A", "trust", "--no-sync"
            )
            self.start()
            self._as_postgres(
                str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "tunnelsite"
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.dir / "db"),
            "-o",
            options,
            "-l",
            str(self.dir / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.dir / "db"), "-m", "fast", "-w", "stop")

    def __exit__(self, *exc: object) -> None:
        pidfile = self.dir / "db" / "postmaster.pid"
        if pidfile.exists():  # still running: stop it, and by PID if pg_ctl cannot
            try:
                self.stop()
            except subprocess.SubprocessError:
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


def outage_requests(stack: Stack, idle: Tunnel, until: float) -> dict[str, Counter]:
    """Every 0.5 s until ``until``: API and compat reads and writes; what each answered (`503 json`)."""
    calls = [
        ("GET /api/v1/status", "GET", "/api/v1/status", ""),
        ("GET /api/v1/tunnels/", "GET", "/api/v1/tunnels/", stack.token),
        ("POST /api/v1/tunnels/<id>/start/", "POST", f"/api/v1/tunnels/{idle.id}/start/?wait=0", stack.token),
        ("GET /list (compat)", "GET", "/list", stack.token),
        ("GET /status (compat)", "GET", "/status", stack.token),
        ("POST /start/<hash> (compat)", "POST", f"/start/{idle.hash}?wait=0", stack.token),
    ]
    seen: dict[str, Counter] = {name: Counter() for name, *_ in calls}
    while time.monotonic() < until:
        began = time.monotonic()
        for name, method, path, token in calls:
            answer = request(stack.web, method, path, token, timeout=20)
            retry = " retry_after" if answer.get("retry_after") is not None else ""
            seen[name][f"{answer.kind}{retry}"] += 1
        time.sleep(max(0.0, 0.5 - (time.monotonic() - began)))
    return seen


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


@contextmanager
def hold_sqlite_lock(path: Path, seconds: float) -> Iterator[tuple[float, subprocess.Popen]]:
    """Another process takes the database's write lock (BEGIN IMMEDIATE) for ``seconds``;
    yields (monotonic time it got the lock, the process)."""
    holder = subprocess.Popen([PY, "-c", LOCKER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "locked":
            raise RuntimeError("the lock holder did not get the lock")
        yield time.monotonic(), holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()


def lock_requests(stack: Stack, idle: Tunnel, until: float, crash: tuple[float, str]) -> dict:
    """While the lock is held: reads every 0.5 s, the health check every second, one create and one
    start?wait=5 at +1 s, and a crash of a tunnel (its process group SIGKILLed) at ``crash`` (moment, id)."""
    results: dict = {"reads": [], "health": []}

    def reads() -> None:
        while time.monotonic() < until:
            results["reads"].append(stack.call("GET", "/api/v1/tunnels/?limit=10", timeout=60).seconds)
            time.sleep(0.5)

    def checks() -> None:
        while time.monotonic() < until:
            said = health(stack.web)
            if said not in results["health"]:
                results["health"].append(said)
            time.sleep(1)

    def writes() -> None:
        time.sleep(1)
        results["create"] = stack.call("POST", "/api/v1/tunnels/", stack.tunnel_body("-L", desired_state="stopped"))

    def start() -> None:
        time.sleep(1)
        results["start"] = stack.action(idle.id, "start", wait=5, timeout=60)

    threads = [threading.Thread(target=target, daemon=True) for target in (reads, checks, writes, start)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, crash[0] - time.monotonic()))
    results["killed_at"] = time.monotonic()
    stack.crash(crash[1])
    for thread in threads:
        thread.join(timeout=120)
    for name in ("create", "start"):
        results.setdefault(name, Answer(0, "", "no answer within 120 s", 120.0))
    return results
