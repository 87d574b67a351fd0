"""Listening sockets and children of a process, read from /proc without scanning the machine."""

from __future__ import annotations

import os
import socket
import struct

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def listening_on(pid: int, port: int) -> bool:
    """True if process ``pid`` holds a listening TCP socket on ``port`` (one table read: for one-off checks)."""
    return holds_listener([pid], port, listening_sockets())


def listening_sockets() -> dict[int, set[int]]:
    """Every listening TCP port of this network namespace → its socket inodes.

    One sock_diag query per address family serves every tunnel checked in a pass: the kernel walks
    only its listening sockets and sends just those. ``/proc/net/tcp`` lists every socket (each
    tunnel's established connections too) as text, and reading it was 40 % of the worker's CPU
    during a start-all of 500; it remains the fallback where netlink is not available.
    """
    try:
        return diag_listeners()
    except OSError:
        return proc_listeners()


# sock_diag (linux/sock_diag.h, linux/inet_diag.h): a dump of the TCP sockets in state LISTEN.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN_STATE = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_DIAG_MSG_SIZE = 72  # inet_diag_msg: sport at 4 (big-endian), inode at 68


def diag_listeners() -> dict[int, set[int]]:
    table: dict[int, set[int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        for family in (socket.AF_INET, socket.AF_INET6):
            # inet_diag_req_v2: family, protocol, ext, pad, states; then an all-zero socket id (48 bytes).
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN_STATE) + bytes(48)
            flags = NLM_F_REQUEST | NLM_F_DUMP
            sock.send(_HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, flags, family, 0) + request)
            _read_dump(sock, table)
    return table


def _read_dump(sock: socket.socket, table: dict[int, set[int]]) -> None:
    while True:
        data = sock.recv(256 * 1024)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _, _, _ = _HEADER.unpack_from(data, offset)
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR or length < _HEADER.size:
                raise OSError("sock_diag refused the dump")
            body = offset + _HEADER.size
            if kind == SOCK_DIAG_BY_FAMILY and length >= _HEADER.size + _DIAG_MSG_SIZE:
                (port,) = struct.unpack_from("!H", data, body + 4)
                (inode,) = struct.unpack_from("=I", data, body + 68)
                table.setdefault(port, set()).add(inode)
            offset += (length + 3) & ~3
        if not data:
            raise OSError("sock_diag dump ended early")


def proc_listeners() -> dict[int, set[int]]:
    """The same table from ``/proc/net/tcp`` and ``tcp6`` (text of every socket: slower)."""
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
