"""Collecting exit statuses without taking another waiter's, and the child-subreaper role."""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
from collections.abc import Collection

import psutil

from tunnels.processes.scan import TUNNEL_NAMES

logger = logging.getLogger("tunnelsite.worker")

PR_SET_CHILD_SUBREAPER = 36


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
