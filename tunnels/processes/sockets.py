"""Listening sockets and children of a process, read from /proc without scanning the machine."""

from __future__ import annotations

import os

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


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
