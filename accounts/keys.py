"""Access keys (HTTP Signature credentials): creation and secret handling."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.db import transaction

from accounts import crypto
from accounts.models import DEFAULT_SCOPES, AccessKey
from tunnelsite.errors import QuotaExceeded

MAX_KEYS_PER_USER = 10


def create(user, *, label: str = "", scopes: list[str] | None = None) -> tuple[AccessKey, str]:
    """A new key for ``user``; returns the row and the secret, which is shown once."""
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        # Lock the user row so two concurrent creates cannot both pass the count. (Not type(user):
        # a dashboard request's user is a lazy wrapper.)
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        check_room(user)
        key = AccessKey.objects.create(
            user=user,
            label=label,
            secret_encrypted=crypto.encrypt(secret),
            scopes=list(DEFAULT_SCOPES if scopes is None else scopes),
        )
    return key, secret


def check_room(user) -> None:
    """Refuse (403) a key beyond the per-user limit; forms call it to show the problem before saving."""
    if AccessKey.objects.filter(user=user).count() >= MAX_KEYS_PER_USER:
        raise QuotaExceeded(f"access key limit reached: at most {MAX_KEYS_PER_USER} keys per user")


def secret_of(key: AccessKey) -> str | None:
    return crypto.decrypt(key.secret_encrypted)
