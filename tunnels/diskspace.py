"""Free space in the data dir: one statvfs, shared by the worker (its node error) and the health check."""

from __future__ import annotations

import shutil

from django.conf import settings

# The problem's words, in WorkerNode.error and in GET /api/v1/status's problems.
DISK_FULL = "disk full: data dir"
# Less free space than this in the data dir is a full disk (and more is resolved).
FULL_BELOW_BYTES = 64 * 1024


def free_bytes() -> int | None:
    try:
        return shutil.disk_usage(settings.DATA_DIR).free
    except OSError:
        return None  # no data dir to measure: nothing to say about its disk


def is_full() -> bool | None:
    """True when the data dir's disk is full; None when it cannot be measured."""
    free = free_bytes()
    return None if free is None else free < FULL_BELOW_BYTES
