"""Liveness of tunnel processes, and stopping their process groups (one at a time or many together)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import psutil

logger = logging.getLogger("tunnelsite.worker")

STOP_GRACE = 3.0


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
