"""Delete request history older than N days (and spent HTTP-signature replay entries)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts import signatures
from accounts.models import ApiRequest


class Command(BaseCommand):
    help = "Delete request history older than --days (default TUNNELSITE_REQUEST_RETENTION_DAYS, 30)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=None)

    def handle(self, *args, days: int | None, **options) -> None:
        days = settings.REQUEST_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must be 0 or more")
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = ApiRequest.objects.filter(created_at__lt=cutoff).delete()
        spent = signatures.prune()
        self.stdout.write(f"Deleted {deleted} request(s) older than {days} day(s) and {spent} spent signature(s).")
