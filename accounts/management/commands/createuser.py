"""Create an ordinary (non-staff) user: the command-line twin of "Add user" in the admin.

Staff are made with Django's ``createsuperuser``. The password is read from stdin
(``--password-stdin``, first line) or asked for twice on a terminal; it is never an
argument, so it does not end up in the shell history or the process list.
"""

from __future__ import annotations

import getpass
import sys

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email


class Command(BaseCommand):
    help = "Create an ordinary (non-staff) user who can log in to the dashboard and the API."
    stealth_options = ("stdin",)

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--email", default="", help="The user's e-mail address (optional).")
        parser.add_argument(
            "--password-stdin", action="store_true", help="Read the password from the first line of stdin."
        )

    def handle(self, *args, username: str, email: str, password_stdin: bool, **options) -> None:
        User = get_user_model()
        stdin = options.get("stdin") or sys.stdin
        try:
            User.username_validator(username)
            if email:
                validate_email(email)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if User.objects.filter(username=username).exists():
            raise CommandError(f"user {username} already exists")
        password = self._read_password(stdin) if password_stdin else self._prompt_password(stdin)
        user = User(username=username, email=email)
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("password refused: " + " ".join(exc.messages)) from None
        user.set_password(password)
        user.save()
        self.stdout.write(f"Created user {username} (not staff). Make an API token: manage.py createtoken {username}")

    def _read_password(self, stdin) -> str:
        password = stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("no password on stdin")
        return password

    def _prompt_password(self, stdin) -> str:
        if not stdin.isatty():
            raise CommandError("stdin is not a terminal: use --password-stdin to pass the password")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("the passwords do not match")
        return first
