"""Generate an SSH key for a user; prints the public key and fingerprint, never the private key."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tunnels import sshkeys
from tunnels.services import ServiceError
from tunnels.services_keys import RSA_MAX_BITS, generate_key


class Command(BaseCommand):
    help = "Generate an SSH key for USERNAME and print its public key (last line) and fingerprint."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="The key's name, unique among the user's keys.")
        parser.add_argument("--algorithm", choices=[sshkeys.ED25519, sshkeys.RSA], default=sshkeys.ED25519)
        parser.add_argument(
            "--bits",
            type=int,
            default=None,
            help=f"RSA only: {sshkeys.RSA_MIN_GENERATED_BITS}-{RSA_MAX_BITS} (default {sshkeys.RSA_DEFAULT_BITS}).",
        )

    def handle(self, *args, username: str, name: str, algorithm: str, bits: int | None, **options) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no such user: {username}")
        try:
            key = generate_key(user, name, algorithm=algorithm, bits=bits)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"SSH key {key.id} '{key.name}' for {username}: {key.algorithm} {key.bits} bits")
        self.stdout.write(f"fingerprint {key.fingerprint}")
        self.stdout.write(f"{key.public_key} {key.comment}")
