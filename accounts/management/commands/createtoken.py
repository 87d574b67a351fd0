"""Mint an API token for a user; the raw token is the last line of output."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import tokens
from accounts.models import ALL_SCOPES, DEFAULT_SCOPES, SCOPE_ADMIN


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (last line). It cannot be shown again."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--label", default="", help="Human-readable name for the token.")
        parser.add_argument(
            "--scope",
            action="append",
            choices=ALL_SCOPES,
            dest="scopes",
            help=f"Repeat for several. Default: {' '.join(DEFAULT_SCOPES)} (+ admin for staff).",
        )
        parser.add_argument("--expires-in", type=int, default=None, metavar="SECONDS", help="Default: never.")

    def handle(self, *args, username: str, label: str, scopes: list[str] | None, expires_in: int | None, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no such user: {username}")
        if not user.is_active:
            raise CommandError(f"user {username} is deactivated")
        if expires_in is not None and expires_in < 1:
            raise CommandError("--expires-in must be a positive number of seconds")
        if scopes is None:
            scopes = [*DEFAULT_SCOPES, SCOPE_ADMIN] if user.is_staff else list(DEFAULT_SCOPES)
        if SCOPE_ADMIN in scopes and not user.is_staff:
            self.stderr.write("warning: the admin scope has no effect for a non-staff user")
        token, raw = tokens.mint(user, label=label, scopes=sorted(set(scopes)), expires_in=expires_in)
        expiry = token.expires_at.isoformat() if token.expires_at else "never"
        self.stdout.write(f"Token {token.id} for {username}: scopes {','.join(token.scopes)}, expires {expiry}")
        self.stdout.write(raw)
