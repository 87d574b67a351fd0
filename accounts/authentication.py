"""DRF authentication classes, tried in the order of REST_FRAMEWORK settings.

1. ``ApiTokenAuthentication``: ``Authorization: Bearer tsk_…`` or ``Token tsk_…``.
2. ``LegacyApiKeyAuthentication``: ``Authorization: Bearer <API_KEY entry>``.
3. DRF ``SessionAuthentication`` for the browser (CSRF enforced).
"""

from __future__ import annotations

import hmac
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions

from accounts import tokens

logger = logging.getLogger("tunnelsite.auth")

INVALID = "Invalid or expired token"


def _credential(request, keywords: tuple[str, ...]) -> str | None:
    header = authentication.get_authorization_header(request).decode("latin-1")
    keyword, _, value = header.partition(" ")
    if keyword.lower() not in keywords or not value.strip():
        return None
    return value.strip()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request):
        raw = _credential(request, self.keywords)
        if raw is None or not raw.startswith(tokens.PREFIX):
            return None  # not ours: let the next class look at it
        token = tokens.verify(raw)
        if token is None:
            raise exceptions.AuthenticationFailed(INVALID)
        tokens.touch(token)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Bearer"


class LegacyApiKeyAuthentication(authentication.BaseAuthentication):
    """The autossh manager's ``API_KEY`` list, acting as ``TUNNELSITE_API_KEY_USER``."""

    def authenticate(self, request):
        raw = _credential(request, ("bearer",))
        if raw is None:
            return None
        if not matches_legacy_key(raw):
            raise exceptions.AuthenticationFailed(INVALID)
        user = legacy_user()
        if user is None:
            logger.error("API_KEY is set but TUNNELSITE_API_KEY_USER=%r does not exist", settings.API_KEY_USER)
            raise exceptions.AuthenticationFailed(INVALID)
        return user, None

    def authenticate_header(self, request) -> str:
        return "Bearer"


def matches_legacy_key(raw: str) -> bool:
    # Compare against every key, without an early exit, in constant time each.
    found = False
    for key in settings.API_KEYS:
        found |= hmac.compare_digest(raw.encode(), key.encode())
    return found


def legacy_user():
    return get_user_model().objects.filter(username=settings.API_KEY_USER, is_active=True).first()
