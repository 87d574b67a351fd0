"""Delete old configuration backups: each user keeps the newest TUNNELSITE_BACKUP_KEEP and
every backup younger than TUNNELSITE_BACKUP_KEEP_DAYS days (rows and files)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from tunnels.backups import prune_all


class Command(BaseCommand):
    help = (
        "Delete configuration backups beyond each user's newest TUNNELSITE_BACKUP_KEEP that are older "
        "than TUNNELSITE_BACKUP_KEEP_DAYS days (every change prunes its owner too; this catches up on all)."
    )

    def handle(self, *args, **options) -> None:
        deleted, users = prune_all()
        self.stdout.write(
            f"deleted {deleted} backups of {users} users "
            f"(keeping the newest {settings.BACKUP_KEEP} and those younger than {settings.BACKUP_KEEP_DAYS} days)"
        )
