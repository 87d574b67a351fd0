"""Starting a tunnel process and reading what it writes to its log."""

from __future__ import annotations

import subprocess
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from tunnels import logfiles


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
