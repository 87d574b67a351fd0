"""Tunnel log files: where they live, keeping them bounded, and reading their ends.

A tunnel's ``autossh``/``ssh`` write to ``logs/tunnel-<uuid>.log`` through a
descriptor opened with ``O_APPEND`` (``tunnels.processes.start``), so the
worker may truncate the file under a running process: the next write lands
at the new end. Rotation is therefore copy-and-truncate: the newest
``LOG_MAX_BYTES`` go to ``.1`` (older copies shift to ``.2`` ... ``.LOG_KEEP``)
and the file is emptied. Lines written between the copy and the truncation
are lost; that window is one copy of at most ``LOG_MAX_BYTES``.

Only the worker rotates or deletes (every second and at its periodic resync, see
``Reconciler._bound_logs``); the web tier only reads, from the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

logger = logging.getLogger("tunnelsite.worker")

BLOCK = 64 * 1024
# A tail never reads more than this, however long the lines (a log line is short; a file may not be).
TAIL_MAX_BYTES = 1024 * 1024


def path_for(uuid: object) -> Path:
    """A tunnel's log file. Named by uuid, which (unlike the hash) survives edits."""
    return settings.DATA_DIR / "logs" / f"tunnel-{uuid}.log"


def rotation(path: Path, number: int) -> Path:
    return path.with_name(f"{path.name}.{number}")


def _size(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


# --- keeping logs bounded (the worker) ------------------------------------------


def rotate(path: Path | str, max_bytes: int | None = None, keep: int | None = None) -> bool:
    """Copy-truncate ``path`` once it is over ``max_bytes``; True if it was rotated. (The worker
    calls it for every running log each second: a log under its limit costs one ``stat``.)"""
    max_bytes = settings.LOG_MAX_BYTES if max_bytes is None else max_bytes
    size = _size(path)
    if size is None or size <= max_bytes:
        return False
    path = Path(path)
    keep = settings.LOG_KEEP if keep is None else keep
    if keep > 0:
        unlink(rotation(path, keep))
        for number in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                rotation(path, number).rename(rotation(path, number + 1))
        _copy_tail(path, rotation(path, 1), max_bytes)
    os.truncate(path, 0)
    return True


def _copy_tail(source: Path, target: Path, limit: int) -> None:
    """The last ``limit`` bytes of ``source`` into ``target`` (a file grown far past the cap costs no more)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        src.seek(max(0, src.seek(0, os.SEEK_END) - limit))
        while chunk := src.read(1024 * 1024):
            dst.write(chunk)


def unlink(path: Path) -> None:
    """Delete ``path``; one already gone is fine (another node, or an operator, got there first)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def remove_all(paths: Iterable[Path]) -> None:
    """Delete logs with all their rotations (of deleted tunnels)."""
    for path in paths:
        for item in path.parent.glob(f"{path.name}*"):
            unlink(item)


@dataclass
class _File:
    path: Path
    size: int
    mtime: float
    live: bool


def _files(logs: Iterable[Path], keep: int) -> list[_File]:
    found = []
    for log in logs:
        for number, path in enumerate([log, *(rotation(log, n) for n in range(1, keep + 1))]):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append(_File(path, stat.st_size, stat.st_mtime, number == 0))
    return found


def cap_user(logs: Iterable[Path], cap: int | None = None, keep: int | None = None) -> set[Path]:
    """Keep one user's logs and their rotations under ``cap`` bytes together; returns the files it cut.

    The oldest rotations go first; if the live logs alone are over the cap, the
    largest are emptied (their writers carry on at the new end).
    """
    cap = settings.USER_LOG_MAX_BYTES if cap is None else cap
    keep = settings.LOG_KEEP if keep is None else keep
    files = _files(logs, keep)
    over = sum(f.size for f in files) - cap
    freed = 0
    cut: set[Path] = set()
    old_first = sorted((f for f in files if not f.live), key=lambda f: f.mtime)
    largest_live = sorted((f for f in files if f.live), key=lambda f: -f.size)
    for item in [*old_first, *largest_live]:
        if freed >= over:
            break
        if item.live:
            os.truncate(item.path, 0)
        else:
            unlink(item.path)
        freed += item.size
        cut.add(item.path)
    return cut


def bound(running: Iterable[Path], by_owner: dict[int, list[Path]]) -> set[Path]:
    """The worker's step: rotate the logs being written, then hold each owner to the per-user cap.

    Returns the live logs it emptied (their readers start again at offset 0).
    """
    emptied = {path for path in running if rotate(path)}
    for owner_id, logs in by_owner.items():
        cut = cap_user(logs)
        if cut:
            logger.info("user %s: dropped %s to stay under the per-user log cap", owner_id, sorted(p.name for p in cut))
        emptied |= cut
    return emptied


# --- reading the end (the web tier and the worker) -------------------------------


def tail_bytes(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of ``path`` (from the start of a line when cut), read from the end."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - limit)
        handle.seek(start)
        data = handle.read(size - start)
    if start > 0:
        data = data.partition(b"\n")[2]  # the first line was cut
    return data


def tail_lines(path: Path, count: int, max_bytes: int = TAIL_MAX_BYTES) -> str:
    """The last ``count`` lines of ``path``, read backwards in blocks (never the whole file)."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        floor = max(0, position - max_bytes)
        chunks: list[bytes] = []
        newlines = 0
        # One newline more than lines wanted guarantees the first kept line is whole.
        while position > floor and newlines <= count:
            size = min(BLOCK, position - floor)
            position -= size
            handle.seek(position)
            chunk = handle.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.splitlines(keepends=True)[-count:]
    return b"".join(lines).decode("utf-8", errors="replace")
