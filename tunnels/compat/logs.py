"""Reading tunnel log files for the compat ``/logs`` endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from django.utils import timezone

from tunnels import logfiles
from tunnelsite.files import human_size


def tail_lines(path: Path, count: int) -> str:
    """The last ``count`` lines of ``path``, read from the end (tunnels.logfiles)."""
    # The original stripped carriage returns (``tr -d '\r'``).
    return logfiles.tail_lines(path, count).replace("\r", "")


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
