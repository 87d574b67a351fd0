"""Re-encrypt every stored SSH private key under the current server secret.

Rotation: set the new TUNNELSITE_TOKEN_PEPPER, list the old one in
TUNNELSITE_TOKEN_OLD_PEPPERS, run this, then drop the old pepper.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from tunnels.services_keys import reencrypt_all
from tunnels.sshkeys import KeyUnavailable


class Command(BaseCommand):
    help = "Re-encrypt every stored SSH private key under the current server secret (after a pepper change)."

    def handle(self, *args, **options) -> None:
        try:
            count = reencrypt_all()
        except KeyUnavailable as exc:
            raise CommandError(
                f"{exc}: list the old pepper in TUNNELSITE_TOKEN_OLD_PEPPERS and run this again"
            ) from None
        self.stdout.write(f"re-encrypted {count} SSH private keys under the current server secret")
