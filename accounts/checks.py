"""System checks for credential settings."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Warning, register
from django.db import DatabaseError


@register("tunnelsite")
def legacy_key_user_exists(app_configs, **kwargs) -> list:
    """API_KEY without an existing TUNNELSITE_API_KEY_USER makes every legacy key fail."""
    if not settings.API_KEYS:
        return []
    from accounts.authentication import legacy_user

    try:
        found = legacy_user() is not None
    except DatabaseError:
        return []  # no database yet (before migrate): nothing to say
    if found:
        return []
    return [
        Warning(
            f"API_KEY is set but TUNNELSITE_API_KEY_USER={settings.API_KEY_USER!r} is not an active user; "
            "requests with a legacy API key will be refused.",
            hint="Create that user (manage.py createsuperuser) or set TUNNELSITE_API_KEY_USER.",
            id="accounts.W001",
        )
    ]
