"""Starting, finding and stopping tunnel processes (used by the worker only).

A tunnel runs as ``autossh`` (which runs ``ssh``) in a session of its own, so
the pair is one process group. Processes carry the tunnel's uuid and the data
dir in their environment; ``scan`` finds them again with one psutil pass, and
(pid, create time) pairs make sure a recycled PID is never taken for a tunnel.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.conf import settings
from django.utils import timezone

from tunnels import logfiles
from tunnels.ssh import DATA_DIR_ENV, GENERATION_ENV, MARKER_ENV, NODE_ENV

logger = logging.getLogger("tunnelsite.worker")

TUNNEL_NAMES = ("autossh", "ssh")
STOP_GRACE = 3.0
PR_SET_CHILD_SUBREAPER = 36
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


@dataclass
class Found:
    """One live tunnel process group as seen by ``scan``."""

    uuid: str
    pid: int  # autossh, or an ssh left behind by a killed autossh (then ``orphan``)
    create_time: float
    pgid: int
    node: str = ""
    generation: int | None = None
    orphan: bool = False
    ssh_pids: list[int] = field(default_factory=list)


@dataclass
class Marker:
    uuid: str
    data_dir: str
    node: str
    generation: int | None


class Scanner:
    """Finds tunnel processes of one data dir; remembers what it read per (pid, create time).

    A process's environment never changes, so it is read once per process,
    not once per pass.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = str(data_dir or settings.DATA_DIR)
        self._markers: dict[tuple[int, float], Marker | None] = {}

    def scan(self) -> dict[str, list[Found]]:
        rows = []
        for proc in psutil.process_iter(["pid", "ppid", "name", "create_time", "status"]):
            info = proc.info
            if info["name"] in TUNNEL_NAMES and info["status"] != psutil.STATUS_ZOMBIE:
                rows.append(info)
        seen = set()
        marked: dict[int, tuple[dict, Marker]] = {}
        for info in rows:
            key = (info["pid"], info["create_time"])
            seen.add(key)
            if key not in self._markers:
                self._markers[key] = _read_marker(info["pid"])
            marker = self._markers[key]
            if marker is not None and marker.data_dir == self.data_dir:
                marked[info["pid"]] = (info, marker)
        # Forget processes that are gone, so the cache stays as small as the process table.
        self._markers = {k: v for k, v in self._markers.items() if k in seen}
        return _group(marked)


def _read_marker(pid: int) -> Marker | None:
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    uuid = env.get(MARKER_ENV)
    if not uuid:
        return None
    generation = env.get(GENERATION_ENV)
    return Marker(
        uuid=uuid,
        data_dir=env.get(DATA_DIR_ENV, ""),
        node=env.get(NODE_ENV, ""),
        generation=int(generation) if generation and generation.isdigit() else None,
    )


def _group(marked: dict[int, tuple[dict, Marker]]) -> dict[str, list[Found]]:
    """autossh processes with their ssh children; an ssh without a marked parent is an orphan."""
    result: dict[str, list[Found]] = {}
    by_pid: dict[int, Found] = {}
    for pid, (info, marker) in marked.items():
        if info["name"] == "autossh":
            found = Found(marker.uuid, pid, info["create_time"], _pgid(pid), marker.node, marker.generation)
            by_pid[pid] = found
            result.setdefault(marker.uuid, []).append(found)
    for pid, (info, marker) in marked.items():
        if info["name"] != "ssh":
            continue
        parent = by_pid.get(info["ppid"])
        if parent is not None:
            parent.ssh_pids.append(pid)
        else:
            found = Found(marker.uuid, pid, info["create_time"], _pgid(pid), marker.node, marker.generation, True)
            result.setdefault(marker.uuid, []).append(found)
    return result


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid


# --- starting ------------------------------------------------------------


def start(
    argv: list[str], env: dict[str, str], log_path: Path, display: str | None = None
) -> tuple[subprocess.Popen, int]:
    """Start a tunnel in its own session; returns the process and the log offset its output begins at.

    The log (which its owner reads) shows ``display``: the command line with placeholders for paths.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logfiles.rotate(log_path)
    shown = display if display is not None else " ".join(argv)
    with open(log_path, "ab") as log:
        log.write(f"=== {timezone.now():%Y-%m-%d %H:%M:%S%z} starting: {shown}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(settings.DATA_DIR),
            start_new_session=True,
            close_fds=True,
        )
    return proc, offset


def read_log(path: Path, offset: int, limit: int = 16384) -> tuple[str, int]:
    """Text written to ``path`` since ``offset`` (at most the last ``limit`` bytes) and the new offset."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", 0
    if size < offset:  # rotated (truncated) since we last looked
        offset = 0
    if size == offset:
        return "", offset
    with open(path, "rb") as handle:
        handle.seek(max(offset, size - limit))
        data = handle.read(size - max(offset, size - limit))
    return data.decode("utf-8", "replace"), size


def tail(path: Path, limit: int = 4096) -> str:
    return read_log(path, 0, limit)[0]


# --- liveness and stopping -------------------------------------------------


def same_process(pid: int, create_time: float | None) -> bool:
    """True if ``pid`` is still the process that had ``create_time`` (and not a zombie)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass
class Group:
    """A tunnel's process group to stop: ``pgid`` plus the (pid, create time) pairs that must be gone."""

    pgid: int
    pids: list[tuple[int, float | None]]
    popen: subprocess.Popen | None = None


def stop_group(
    pgid: int,
    pids: list[tuple[int, float | None]],
    popen: subprocess.Popen | None = None,
    *,
    reap_orphans: bool = False,
) -> bool:
    """SIGTERM the group, SIGKILL after a grace period; True once every listed pid is gone.

    Only a pgid taken from a process verified by (pid, create time) is
    signalled: Linux does not reuse an id while its group still has members.
    """
    return not stop_groups([Group(pgid, pids, popen)], reap_orphans=reap_orphans)


def stop_groups(groups: list[Group], *, reap_orphans: bool = False) -> list[Group]:
    """``stop_group`` for many at once: every group is signalled, then all share one grace period
    (stopping a thousand takes about as long as stopping one). Returns the groups still alive."""
    terminate_groups(groups)
    return await_groups(groups, reap_orphans=reap_orphans)


def terminate_groups(groups: list[Group]) -> None:
    for group in groups:
        _killpg(group.pgid, signal.SIGTERM)


def await_groups(groups: list[Group], *, reap_orphans: bool = False) -> list[Group]:
    """Wait for signalled groups to exit, SIGKILL those left after the grace period; returns the survivors."""
    left = _wait_gone(groups, STOP_GRACE, reap_orphans)
    survivors = {id(group) for group in left}
    for group in groups:  # members the caller did not list (a new ssh child) go too
        if id(group) in survivors or _group_exists(group.pgid):
            _killpg(group.pgid, signal.SIGKILL)
    left = _wait_gone(left, 2.0, reap_orphans)
    for group in groups:  # a process may have died between the last reaping and the last look
        _reap_listed(group.popen, group.pids, False)
    for group in left:
        logger.error("process group %s did not exit after SIGKILL", group.pgid)
    return left


def _wait_gone(groups: list[Group], seconds: float, reap_orphans: bool) -> list[Group]:
    deadline = time.monotonic() + seconds
    left = list(groups)
    while left:
        for group in left:
            _reap_listed(group.popen, group.pids, False)  # unlisted orphans: the worker loop, on SIGCHLD
        left = [g for g in left if any(same_process(pid, ctime) for pid, ctime in g.pids)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # delivers nothing: only asks whether the group has members
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _reap_listed(popen: subprocess.Popen | None, pids: list[tuple[int, float | None]], orphans: bool) -> None:
    """Reap the processes being stopped if they are our children (only those: never steal others' statuses).

    ``orphans`` is kept for callers; unlisted orphans are reaped by the worker loop on SIGCHLD
    (``reap_orphans``), not here every 20 ms of a stop.
    """
    if popen is not None:
        popen.poll()
    for pid, _ in pids:
        if popen is not None and pid == popen.pid:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def reap(popen: subprocess.Popen | None = None, *, orphans: bool = False) -> dict[int, int]:
    """Collect exit statuses: of ``popen`` and (in the worker) of orphans re-parented to it."""
    if popen is not None:
        popen.poll()
    return reap_orphans() if orphans else {}


def reap_orphans(skip: Collection[int] = ()) -> dict[int, int]:
    """Reap zombie children that were re-parented to this process; returns pid -> raw wait status.

    Never ``waitpid(-1)``: that takes the status of a child a ``Popen`` (or a thread's
    ``subprocess.run``) waits for, which then reads "exit status 0" whatever happened.
    Every child this process starts leads its own session or shares ours; a child in
    any other session was started by someone else and re-parented here (we are a
    child subreaper), e.g. the ssh of a killed autossh. ``skip``: pids reaped elsewhere.
    """
    own_session = os.getsid(0)
    reaped: dict[int, int] = {}
    for pid in _children():
        if pid in skip:
            continue
        stat = _state_and_session(pid)
        if stat is None or stat[0] != "Z" or stat[1] in (pid, own_session):
            continue
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if got == pid:
            reaped[pid] = status
    return reaped


def _children() -> list[int]:
    """This process's children (every thread's: a re-parented orphan may hang under any of them)."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as handle:
                pids.extend(int(pid) for pid in handle.read().split())
    except FileNotFoundError:  # a thread ended meanwhile, or a kernel without CONFIG_PROC_CHILDREN
        return [child.pid for child in psutil.Process().children()]
    except OSError:
        return []
    return pids


def _state_and_session(pid: int) -> tuple[str, int] | None:
    """A process's state letter and session id from /proc (a zombie keeps both)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the name may hold spaces and parentheses
    try:
        return fields[0], int(fields[3])  # state, ppid, pgrp, session
    except (IndexError, ValueError):
        return None


def become_subreaper(enable: bool = True) -> None:
    """Ask Linux to re-parent orphaned descendants to the worker so they can be reaped.

    When autossh is killed its ssh child is orphaned; without this it would
    become a zombie of an init that may not reap (as in some containers).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if enable else 0, 0, 0, 0)
    except (OSError, AttributeError):
        logger.info("could not become a child subreaper; orphaned ssh processes are reaped by init")


def reap_zombie_tunnels() -> None:
    """Reap this process's dead autossh/ssh children (only those: others' exit statuses are left alone)."""
    for child in psutil.Process().children():
        try:
            if child.name() in TUNNEL_NAMES and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


def listening_on(pid: int, port: int) -> bool:
    """True if process ``pid`` holds a listening TCP socket on ``port`` (one table read: for one-off checks)."""
    return holds_listener([pid], port, listening_sockets())


def listening_sockets() -> dict[int, set[int]]:
    """Every listening TCP port of this network namespace → its socket inodes.

    One read of ``/proc/net/tcp`` and ``tcp6`` serves every tunnel checked in a pass
    (psutil's per-process ``net_connections`` reads the whole table each time).
    """
    table: dict[int, set[int]] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as handle:
                next(handle, None)  # the header
                for line in handle:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == TCP_LISTEN:
                        port = int(fields[1].rpartition(":")[2], 16)
                        table.setdefault(port, set()).add(int(fields[9]))
        except OSError:  # no IPv6, or no /proc: nothing listens that we can see
            continue
    return table


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds (its fds only: no scan of other processes)."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def holds_listener(pids: list[int], port: int, table: dict[int, set[int]]) -> bool:
    """True if one of ``pids`` holds a socket listening on ``port`` (``table`` from ``listening_sockets``)."""
    inodes = table.get(port)
    return bool(inodes) and any(inodes & socket_inodes(pid) for pid in pids)


def children(pid: int) -> list[int] | None:
    """The child pids of ``pid`` from one small /proc file (None when the kernel does not offer it)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return None if os.path.exists(f"/proc/{pid}") else []  # a process that is gone has no children
    except (OSError, ValueError):
        return []
