"""Finding tunnel processes again: one read of each process's ``/proc/<pid>/stat``, markers read once
per process."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.conf import settings

from tunnels.ssh import DATA_DIR_ENV, GENERATION_ENV, KIND_ENV, MARKER_ENV, NODE_ENV

TUNNEL_NAMES = ("autossh", "ssh")


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
    master: bool = False  # an interactive tunnel's ssh control master (no autossh above it)


@dataclass
class Marker:
    uuid: str
    data_dir: str
    node: str
    generation: int | None
    kind: str = ""  # KIND_ENV: "master" for an interactive tunnel's ssh


class Scanner:
    """Finds tunnel processes of one data dir; remembers what it read per (pid, create time).

    A process's environment never changes, so it is read once per process,
    not once per pass.
    """

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self.data_dir = str(data_dir or settings.DATA_DIR)
        self._markers: dict[tuple[int, float], Marker | None] = {}

    def scan(self) -> dict[str, list[Found]]:
        rows = tunnel_processes()
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


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_NAMES = {name.encode() for name in TUNNEL_NAMES}


def tunnel_processes(proc: str = "/proc") -> list[dict]:
    """pid, ppid, name and create time of every live (not zombie) autossh and ssh on the machine.

    One open and read per process: psutil's ``process_iter`` reads each ``stat`` file about three
    times and ``/proc/stat`` once per create time (150 ms a pass with 2,000 processes here, against
    ~30 ms). The create time is psutil's own formula (start ticks / CLK_TCK + boot time), so it
    compares with ``psutil.Process.create_time()`` elsewhere."""
    boot = psutil.boot_time()
    rows = []
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:  # gone meanwhile
            continue
        close = data.rfind(b")")  # the name may hold spaces and parentheses
        name = data[data.find(b"(") + 1 : close]
        if name not in _NAMES:
            continue
        fields = data[close + 2 :].split()  # state, ppid, …; starttime is field 22 of the whole line
        if len(fields) < 20 or fields[0] == b"Z":
            continue
        rows.append(
            {
                "pid": int(entry.name),
                "ppid": int(fields[1]),
                "name": name.decode(),
                "create_time": int(fields[19]) / CLOCK_TICKS + boot,
            }
        )
    return rows


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
        kind=env.get(KIND_ENV, ""),
    )


def _group(marked: dict[int, tuple[dict, Marker]]) -> dict[str, list[Found]]:
    """autossh processes with their ssh children; an ssh without a marked parent is an orphan, unless
    it is an interactive tunnel's master (the tunnel's process itself)."""
    result: dict[str, list[Found]] = {}
    by_pid: dict[int, Found] = {}
    for pid, (info, marker) in marked.items():
        if info["name"] == "autossh" and not _forked_by_autossh(info, marked):
            found = Found(marker.uuid, pid, info["create_time"], _pgid(pid), marker.node, marker.generation)
            by_pid[pid] = found
            result.setdefault(marker.uuid, []).append(found)
    for pid, (info, marker) in marked.items():
        if info["name"] != "ssh" and not _forked_by_autossh(info, marked):
            continue
        parent = by_pid.get(info["ppid"])
        if marker.kind == "master":
            found = Found(marker.uuid, pid, info["create_time"], _pgid(pid), marker.node, marker.generation)
            found.master = True
            result.setdefault(marker.uuid, []).append(found)
        elif parent is not None:
            parent.ssh_pids.append(pid)
        else:
            found = Found(marker.uuid, pid, info["create_time"], _pgid(pid), marker.node, marker.generation, True)
            result.setdefault(marker.uuid, []).append(found)
    return result


def _forked_by_autossh(info: dict, marked: dict[int, tuple[dict, Marker]]) -> bool:
    """An "autossh" whose parent is a marked autossh is that autossh's ssh between fork and exec:
    its child, not a second tunnel process (a pass that looked then took it for a duplicate)."""
    parent = marked.get(info["ppid"])
    return info["name"] == "autossh" and parent is not None and parent[0]["name"] == "autossh"


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return pid
