"""Real database faults for tests: SQLite's write lock held by another connection, and a throw-away
PostgreSQL cluster of the test's own that can be stopped and started again mid-test.

The cluster runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses root), on a
free port, with its data dir and socket in a temp dir; it is stopped by the postmaster's PID, and the
temp dir removed, whatever the test's outcome.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.procs import free_port, wait_for


@contextlib.contextmanager
def sqlite_write_lock(path: str) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock on ``path`` from a second connection (readers still read: WAL)."""
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield holder
    finally:
        with contextlib.suppress(sqlite3.Error):
            holder.execute("ROLLBACK")
        holder.close()


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Cluster:
    """A PostgreSQL cluster in a temp dir on ``127.0.0.1:<port>``; ``url`` names its ``postgres`` database."""

    def __init__(self, port: int | None = None) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin)")
        self.bin = bindir
        self.port = port or int(os.environ.get("TUNNELSITE_TEST_PG_PORT") or free_port())
        self.dir = Path(tempfile.mkdtemp(prefix="tunnelsite-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def createdb(self, name: str) -> str:
        """Create database ``name`` in this cluster; returns its URL."""
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url_for(name)

    def _run(self, *argv: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *argv], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.dir / "server.log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "-t", "30", "start")

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop by the postmaster's PID: SIGINT is PostgreSQL's "fast" shutdown (clients cut off)."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        try:
            wait_for(lambda: not _alive(pid), timeout=20, message="postgres to stop")
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), timeout=10, message="postgres to die")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; the postmaster is pg_ctl's child, reaped by init.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    pg = Cluster()
    try:
        pg.init()
        pg.start()
        yield pg
    finally:
        pg.remove()


def elapsed(start: float) -> float:
    return time.monotonic() - start
