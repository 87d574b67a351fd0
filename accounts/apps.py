from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and credentials"

    def ready(self) -> None:
        from accounts import checks, schema  # noqa: F401  (registers checks and OpenAPI auth schemes)
