"""Exit events: one pidfd per watched process in an epoll set, so exits are learnt without polling.

The reconciler watches every autossh it starts or adopts and each tunnel's ssh
children (``watch``/``unwatch``, ``watch_tracked``). When one exits, ``collect``
records ``exited[pid]``: the raw wait status for our own children, taken with
``waitpid(pid)`` for that pid only (so a kill -9 reads as killed by SIGKILL and a
``Popen`` elsewhere keeps its status), or None for a process that is not our
child. The epoll set's own fd goes into the worker loop's selector
(tunnels.worker.wake), which sleeps until something happens.

Kernels without pidfds (before 5.3) fall back to checking the watched pids every
``POLL_SECONDS`` (and on SIGCHLD): slower, never wrong.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import selectors
import subprocess

from tunnels import processes
from tunnels.worker.evidence import describe_exit  # noqa: F401 - the words for a status live there
from tunnels.worker.tracked import Tracked

logger = logging.getLogger("tunnelsite.worker")

POLL_SECONDS = 1.0  # without pidfds: how often watched pids are checked
# Descriptors left for everything else (logs, /proc, the database, sockets): beyond the open-files limit
# less this, watched pids are polled instead of taking the last descriptors the worker needs to run.
FDS_RESERVED = 512


def pidfd_supported() -> bool:
    """True if this kernel (and Python) can give a file descriptor for a process."""
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


def raw_status(returncode: int) -> int:
    """The wait status a ``Popen.returncode`` stands for (-9 → killed by signal 9)."""
    return -returncode if returncode < 0 else (returncode & 0xFF) << 8


class ExitWatch:
    """The processes being watched, and which of them exited since the last pass."""

    def __init__(self, *, use_pidfd: bool | None = None) -> None:
        self.selector = selectors.DefaultSelector()
        self.use_pidfd = pidfd_supported() if use_pidfd is None else use_pidfd
        self.exited: dict[int, int | None] = {}
        self._fds: dict[int, int] = {}  # pid -> pidfd
        self._polled: dict[int, float | None] = {}  # pid -> create time, when no pidfd could be had
        self._popens: dict[int, subprocess.Popen] = {}
        self.max_fds = _pidfd_room()
        self._ssh: dict[int, set[int]] = {}  # autossh pid -> its ssh children being watched
        self._warned = False

    def fileno(self) -> int:
        """Readable when a watched process exited (an epoll fd nests in another selector)."""
        return self.selector.fileno()

    @property
    def polling(self) -> bool:
        """Some watched pids have no pidfd: the loop must call ``collect`` every POLL_SECONDS."""
        return bool(self._polled)

    def __len__(self) -> int:
        return len(self._fds) + len(self._polled)

    # --- watching --------------------------------------------------------

    def watch(self, pid: int, popen: subprocess.Popen | None = None) -> None:
        if pid in self._fds or pid in self._polled or pid in self.exited:
            return
        if popen is not None:
            self._popens[pid] = popen
        if self.use_pidfd and len(self._fds) >= self.max_fds:
            self._warn(OSError(errno.EMFILE, f"{len(self._fds)} pidfds: the open-files limit less {FDS_RESERVED}"))
        elif self.use_pidfd:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:  # gone (and reaped) already
                self._record(pid, self._wait(pid))
                return
            except OSError as exc:
                self._warn(exc)
            else:
                self._fds[pid] = fd
                self.selector.register(fd, selectors.EVENT_READ, pid)
                return
        created = processes.create_time(pid)
        if created is None:
            self._record(pid, self._wait(pid))
        else:
            self._polled[pid] = created

    def unwatch(self, pid: int) -> None:
        """Stop watching ``pid`` and forget its exit (the caller handled it)."""
        self._release(pid)
        self._popens.pop(pid, None)
        self.exited.pop(pid, None)
        for ssh in self._ssh.pop(pid, set()):
            self.unwatch(ssh)

    def watch_tracked(self, tracked: Tracked) -> None:
        """Watch a tunnel's autossh and exactly its current ssh children."""
        self.watch(tracked.pid, tracked.popen)
        current = set(tracked.ssh_pids)
        before = self._ssh.get(tracked.pid, set())
        for pid in before - current:
            self._release(pid)  # a dead one's exit stays in ``exited`` until the pass has seen it
        for pid in current - before:
            self.watch(pid)
        self._ssh[tracked.pid] = current

    def unwatch_tracked(self, tracked: Tracked) -> None:
        self.unwatch(tracked.pid)
        for pid in tracked.ssh_pids:
            self.unwatch(pid)

    # --- learning of exits -----------------------------------------------

    def collect(self) -> dict[int, int | None]:
        """Exits since the last call, without blocking; they are also added to ``exited``."""
        new: dict[int, int | None] = {}
        if self._fds:
            for key, _ in self.selector.select(0):
                pid = key.data
                new[pid] = self._record(pid, self._wait(pid))
        for pid, created in list(self._polled.items()):
            status, gone = self._check(pid, created)
            if gone:
                new[pid] = self._record(pid, status)
        return new

    def take_orphans(self) -> dict[int, int]:
        """After SIGCHLD: reap orphans re-parented to the worker that nobody watches (their exits count too)."""
        reaped = processes.reap_orphans(skip=self._fds.keys() | self._polled.keys())
        for pid, status in reaped.items():
            self.exited.setdefault(pid, status)
        return reaped

    def _record(self, pid: int, status: int | None) -> int | None:
        popen = self._popens.pop(pid, None)
        if popen is not None:
            if status is None and popen.returncode is not None:
                status = raw_status(popen.returncode)  # reaped by the Popen itself (e.g. during a stop)
            elif status is not None and popen.returncode is None:
                popen.returncode = os.waitstatus_to_exitcode(status)  # Popen cannot learn it any more
        self._release(pid)
        if self.exited.get(pid) is None:
            self.exited[pid] = status
        return self.exited[pid]

    def _release(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)
        self._polled.pop(pid, None)

    @staticmethod
    def _wait(pid: int) -> int | None:
        """The raw status of ``pid`` if it is our child and exited (reaping it), else None."""
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        return status if got == pid else None

    def _check(self, pid: int, created: float | None) -> tuple[int | None, bool]:
        """Without a pidfd: (status, gone) of a watched pid."""
        popen = self._popens.get(pid)
        if popen is not None:
            return None, popen.poll() is not None
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None, not processes.same_process(pid, created)
        return (status, True) if got == pid else (None, False)

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            hint = " (raise the open-files limit: ulimit -n)" if exc.errno in (errno.EMFILE, errno.ENFILE) else ""
            logger.warning("no pidfd for a process, checking it every %.0fs instead: %s%s", POLL_SECONDS, exc, hint)

    def close(self) -> None:
        for pid in list(self._fds):
            self._release(pid)
        self.selector.close()


class ExitEvents:
    """Reconciler mixin: ``watch``/``unwatch`` and ``exited`` (shared.md's interface) over an ExitWatch."""

    exits: ExitWatch

    @property
    def exited(self) -> dict[int, int | None]:
        return self.exits.exited

    def watch(self, pid: int, popen: subprocess.Popen | None = None) -> None:
        self.exits.watch(pid, popen)

    def unwatch(self, pid: int) -> None:
        self.exits.unwatch(pid)

    def watch_tracked(self, tracked: Tracked) -> None:
        self.exits.watch_tracked(tracked)

    def unwatch_tracked(self, tracked: Tracked) -> None:
        self.exits.unwatch_tracked(tracked)

    def collect_exits(self) -> bool:
        """Take the exit events that arrived (non-blocking); True if any exit waits for a pass."""
        self.exits.collect()
        return bool(self.exits.exited)

    def exits_handled(self) -> None:
        """The pass has seen every recorded exit."""
        self.exits.exited.clear()


def _pidfd_room() -> int:
    """How many pidfds the worker may hold: its open-files limit (read once, after the loop raised it)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(0, soft - FDS_RESERVED)
