"""Small file helpers shared by the apps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` so readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def human_size(size: int) -> str:
    """Sizes the way ``du -h`` prints them: 4.0K, 12K, 1.5M (rounded up)."""
    if size == 0:
        return "0"
    units = ["", "K", "M", "G", "T"]
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return str(size)
    import math

    if value < 10:
        return f"{math.ceil(value * 10) / 10:.1f}{units[unit]}"
    return f"{math.ceil(value)}{units[unit]}"
