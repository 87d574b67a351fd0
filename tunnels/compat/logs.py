"""Reading tunnel log files for the compat ``/logs`` endpoints."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from django.utils import timezone

from tunnelsite.files import human_size

BLOCK = 64 * 1024


def tail_lines(path: Path, count: int) -> str:
    """The last ``count`` lines of ``path``, read backwards in blocks (never the whole file)."""
    with open(path, "rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        newlines = 0
        # One newline more than lines wanted guarantees the first kept line is whole.
        while position > 0 and newlines <= count:
            size = min(BLOCK, position)
            position -= size
            handle.seek(position)
            chunk = handle.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.splitlines(keepends=True)[-count:]
    # The original stripped carriage returns (``tr -d '\r'``).
    return b"".join(lines).decode("utf-8", errors="replace").replace("\r", "")


def file_entry(path: Path, hash_value: str) -> dict[str, str] | None:
    """One ``/logs`` entry, or None when the tunnel has no log (yet)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    modified = timezone.localtime(datetime.fromtimestamp(stat.st_mtime, tz=UTC))
    return {
        "hash": hash_value,
        "filename": f"tunnel-{hash_value}.log",
        # du -h's format, of the byte size (du itself counts 4K blocks, so tiny logs show as 4.0K there).
        "size": human_size(stat.st_size),
        "modified": modified.strftime("%Y-%m-%d %H:%M:%S"),
    }
