"""Pruning configuration backups (ConfigBackup rows and their files under ``DATA_DIR/backups``).

Each user keeps their newest ``BACKUP_KEEP`` backups and every backup younger
than ``BACKUP_KEEP_DAYS`` days, whichever keeps more. ``services.snapshot``
prunes its owner after each backup, at most ``PRUNE_BATCH`` rows at a time so
a request's work stays bounded (one backup in, up to a batch out, drains any
backlog); ``manage.py prune_backups`` prunes everyone completely.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tunnels.models import ConfigBackup

PRUNE_BATCH = 50


def directory() -> Path:
    return settings.DATA_DIR / "backups"


def prune(owner_id: int, *, limit: int | None, now: datetime | None = None) -> int:
    """Delete up to ``limit`` (None: all) of ``owner_id``'s backups that are neither recent nor among the newest.

    Returns how many rows went. Files are deleted once the transaction commits
    (a rolled-back request keeps both), and a file already gone is fine.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.BACKUP_KEEP_DAYS)
    mine = ConfigBackup.objects.filter(owner_id=owner_id)
    # Newest first, every young backup ranks before every old one: the first
    # (keep - young) old ones are still among the newest ``keep``.
    skip = max(0, settings.BACKUP_KEEP - mine.filter(created_at__gte=cutoff).count())
    old = mine.filter(created_at__lt=cutoff).order_by("-created_at", "-id").values_list("id", "file_name")
    doomed = list(old[skip : skip + limit] if limit is not None else old[skip:])
    if not doomed:
        return 0
    ConfigBackup.objects.filter(id__in=[pk for pk, _ in doomed]).delete()
    names = [name for _, name in doomed]
    transaction.on_commit(lambda: delete_files(names))
    return len(doomed)


def delete_files(names: list[str]) -> None:
    base = directory().resolve()
    for name in names:
        path = (base / name).resolve()
        if not name or not path.is_relative_to(base):
            continue  # a file name that points outside the backups never deletes anything
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def prune_all() -> tuple[int, int]:
    """Prune every user completely (the management command); returns (backups deleted, users pruned)."""
    deleted = users = 0
    owners = ConfigBackup.objects.order_by().values_list("owner_id", flat=True).distinct()
    for owner_id in list(owners):
        count = 0
        while batch := _prune_batch(owner_id):
            count += batch
        deleted += count
        users += bool(count)
    return deleted, users


def _prune_batch(owner_id: int) -> int:
    with transaction.atomic():
        return prune(owner_id, limit=500)
