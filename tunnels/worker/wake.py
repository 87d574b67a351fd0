"""What wakes the worker: signals, process exits, changes to the desired state, a peer's lease running out.

Everything the loop waits for is a file descriptor in one selector, so an idle
worker sleeps in ``epoll_wait`` until something happens:

* signals (SIGTERM/SIGINT to stop, SIGCHLD for orphans re-parented to us), through ``signal.set_wakeup_fd``;
* process exits: the epoll fd of the reconciler's pidfds (tunnels.worker.exits);
* changes: on PostgreSQL, ``services.bump_marker`` sends ``NOTIFY tunnelsite_changes`` and the worker
  ``LISTEN``s on a connection of its own; on SQLite the web process sends a datagram after commit to the
  worker's socket in ``<data>/run/`` (``poke_workers``). The change marker is still read every
  ``TUNNELSITE_WORKER_FALLBACK_POLL`` s in case a wake-up got lost (every ``--interval`` s while no event
  source works, e.g. while the database is away).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import connection

logger = logging.getLogger("tunnelsite.worker")

CHANNEL = "tunnelsite_changes"
RECONNECT_SECONDS = 2.0  # between attempts to re-establish LISTEN
SUN_PATH_MAX = 100  # sockaddr_un holds 108 bytes; longer paths go through /proc/self/fd/N


# --- the change notification, sender side (web processes) ----------------------


def notify_change() -> None:
    """Called by ``services.bump_marker`` inside the change's transaction: wake the workers after commit."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"NOTIFY {CHANNEL}")  # delivered at commit, dropped on rollback
    else:
        from django.db import transaction

        transaction.on_commit(poke_workers)


def run_dir() -> Path:
    return Path(settings.DATA_DIR) / "run"


def socket_name(node: str) -> str:
    # Node names are free text: a digest keeps the file name short and safe.
    return f"worker-{hashlib.sha256(node.encode()).hexdigest()[:16]}.sock"


def poke_workers() -> None:
    """Send every worker of this data dir a datagram; ignore sockets nobody listens on."""
    directory = run_dir()
    try:
        names = [n for n in os.listdir(directory) if n.startswith("worker-") and n.endswith(".sock")]
    except OSError:
        return
    if not names:
        return
    with _short_paths(directory) as base, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # a full queue means a wake-up is pending anyway: never wait for it
        for name in names:
            with contextlib.suppress(OSError):
                sock.sendto(b"!", f"{base}/{name}")


@contextlib.contextmanager
def _short_paths(directory: Path):
    """A prefix for socket paths in ``directory`` that fits sockaddr_un (via an fd if the path is long)."""
    if len(str(directory)) < SUN_PATH_MAX - 30:
        yield str(directory)
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


# --- the change notification, worker side ------------------------------------------


class PokeSocket:
    """SQLite: the worker's datagram socket in <data>/run (0700 directory, 0600 socket)."""

    def __init__(self, node: str) -> None:
        directory = run_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.path = directory / socket_name(node)
        _remove_stale(directory, self.path.name)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # ours, left by a worker of this node that died
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        old_umask = os.umask(0o177)
        try:
            with _short_paths(directory) as base:
                self.sock.bind(f"{base}/{self.path.name}")
        finally:
            os.umask(old_umask)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        got = False
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self.sock.recv(64)
                got = True
        return got

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _remove_stale(directory: Path, keep: str) -> None:
    """Sockets of workers that died without removing theirs: a datagram to them is refused."""
    with _short_paths(directory) as base, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        for name in os.listdir(directory):
            if name == keep or not name.endswith(".sock"):
                continue
            try:
                probe.connect(f"{base}/{name}")
            except ConnectionRefusedError:
                with contextlib.suppress(FileNotFoundError):
                    (directory / name).unlink()
            except OSError:
                continue


class Listener:
    """PostgreSQL: ``LISTEN tunnelsite_changes`` on a connection of the worker's own (autocommit)."""

    def __init__(self) -> None:
        self.conn = None

    def connect(self) -> None:
        params = connection.get_connection_params()
        conn = connection.get_new_connection(params)
        try:
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception:
            conn.close()
            raise
        self.conn = conn

    def fileno(self) -> int:
        return self.conn.fileno()

    def drain(self) -> bool:
        """True if a notification arrived; raises if the connection broke."""
        return any(True for _ in self.conn.notifies(timeout=0))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None


# --- the selector --------------------------------------------------------------


@dataclass
class Woken:
    """Why the loop woke up."""

    changed: bool = False  # a NOTIFY or poke: read the change marker
    exits: bool = False  # a watched process exited
    sigchld: bool = False  # a child exited: look for orphans to reap
    signals: set[int] = field(default_factory=set)


class Wake:
    """One selector over the signal pipe, the exit watch and the change source."""

    def __init__(self, exits) -> None:
        self.selector = selectors.DefaultSelector()
        self._rsig, self._wsig = socket.socketpair()
        for end in (self._rsig, self._wsig):
            end.setblocking(False)
        self.selector.register(self._rsig, selectors.EVENT_READ, "signal")
        self.selector.register(exits.fileno(), selectors.EVENT_READ, "exits")
        self.source: PokeSocket | Listener | None = None
        self._source_fd = -1  # kept: a broken connection cannot tell its fd any more
        self._next_connect = 0.0
        self._previous_wakeup_fd: int | None = None

    def install_signals(self, on_stop) -> None:
        """SIGTERM/SIGINT call ``on_stop``; every signal (SIGCHLD too) also wakes the selector."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wsig.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.siginterrupt(signal.SIGCHLD, False)  # restart system calls: children exit often

    @property
    def listening(self) -> bool:
        return self.source is not None

    def ensure_source(self, node: str) -> bool:
        """Set up NOTIFY/poke if it is not; True when it was (re)established now (read the marker then)."""
        if self.source is not None or time.monotonic() < self._next_connect:
            return False
        self._next_connect = time.monotonic() + RECONNECT_SECONDS
        try:
            if connection.vendor == "postgresql":
                source = Listener()
                source.connect()
            else:
                source = PokeSocket(node)
        except Exception as exc:  # the database is away: the marker poll covers it meanwhile
            logger.debug("no change notifications yet: %s", exc)
            return False
        self.source, self._source_fd = source, source.fileno()
        self.selector.register(self._source_fd, selectors.EVENT_READ, "change")
        return True

    def drop_source(self) -> None:
        if self.source is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(self._source_fd)
            self.source.close()
            self.source, self._source_fd = None, -1

    def wait(self, timeout: float) -> Woken:
        woken = Woken()
        for key, _ in self.selector.select(max(0.0, timeout)):
            if key.data == "signal":
                woken.signals |= self._read_signals()
            elif key.data == "exits":
                woken.exits = True
            elif key.data == "change":
                woken.changed |= self._drain_source()
        woken.sigchld = signal.SIGCHLD in woken.signals
        return woken

    def _read_signals(self) -> set[int]:
        numbers: set[int] = set()
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                data = self._rsig.recv(512)
                if not data:
                    break
                numbers.update(data)
        return numbers

    def _drain_source(self) -> bool:
        try:
            return self.source.drain()
        except Exception as exc:  # the LISTEN connection broke: poll the marker until it is back
            reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            logger.info("change notifications lost (%s); polling the change marker", reason)
            self.drop_source()
            return True

    def close(self) -> None:
        if self._previous_wakeup_fd is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(self._previous_wakeup_fd)
        self.drop_source()
        self.selector.close()
        self._rsig.close()
        self._wsig.close()
