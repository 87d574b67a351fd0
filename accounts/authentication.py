"""DRF authentication classes, tried in this fixed order (REST_FRAMEWORK settings):

1. ``ApiTokenAuthentication``: ``Authorization: Bearer tsk_…`` or ``Token tsk_…``
   (API tokens, private or temporary).
2. ``SignatureAuthentication``: ``Authorization: Signature keyId=…`` (access keys,
   HTTP Signatures).
3. ``LegacyApiKeyAuthentication``: ``Authorization: Bearer <an API_KEY entry>``,
   acting as ``TUNNELSITE_API_KEY_USER``. Being the last header-based class, it
   also refuses every Authorization header the classes before it did not claim.
4. ``SessionAuthentication``: the browser session (CSRF enforced on unsafe methods).

The autossh-compatible paths use ``COMPAT_AUTHENTICATION`` instead: ``Bearer`` only
(API token or legacy key), or the browser session.

A credential that is present but wrong is a 401; it never falls through to
anonymous. Each class records how the request was authenticated on the Django
request (``auth_info``) for the request history middleware.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts import keys, signatures, tokens
from accounts.models import AccessKey
from tunnelsite.dblocks import best_effort

logger = logging.getLogger("tunnelsite.auth")

INVALID = "Invalid or expired token"
INVALID_SIGNATURE = "Invalid signature"


@dataclass(frozen=True)
class AuthInfo:
    """What the request history records about the credential (never the secret)."""

    method: str
    token_id: uuid.UUID | None = None
    label: str = ""


def _mark(request, info: AuthInfo) -> None:
    request._request.auth_info = info


def _header(request) -> tuple[str, str]:
    """(scheme in lower case, credential) of the Authorization header; ("", "") when absent."""
    header = authentication.get_authorization_header(request).decode("latin-1")
    scheme, _, value = header.partition(" ")
    return scheme.lower(), value.strip()


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """API tokens ``tsk_<lookup>_<secret>`` as ``Bearer`` or ``Token`` (JumpServer private-token style)."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        scheme, raw = _header(request)
        if scheme not in self.keywords or not raw.startswith(tokens.PREFIX):
            return None  # not ours: let the next class look at it
        token = tokens.verify(raw)
        if token is None:
            raise exceptions.AuthenticationFailed(INVALID)
        tokens.touch(token)
        _mark(request, AuthInfo("token", token.id, token.label or token.prefix))
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Bearer"


class BearerTokenAuthentication(ApiTokenAuthentication):
    """API tokens as ``Bearer`` only: the autossh-compatible paths, whose original knew no other
    scheme (COMPAT.md). ``Token tsk_…`` there reaches ``LegacyApiKeyAuthentication``, which refuses it."""

    keywords = ("bearer",)


class SignatureAuthentication(authentication.BaseAuthentication):
    """Access keys: ``Authorization: Signature keyId="<uuid>",algorithm="hmac-sha256",headers="…",signature="…"``.

    See ``accounts.signatures`` for the rules (signed headers, Date skew, Digest, replay).
    An unknown key id and a wrong signature get the same answer.
    """

    def authenticate(self, request):
        scheme, value = _header(request)
        if scheme != "signature":
            return None
        try:
            params = signatures.parse(value)
            signatures.check_policy(request._request, params)
        except signatures.SignatureError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        key = self._key(params.key_id)
        secret = keys.secret_of(key) if key is not None else None
        if secret is None or not signatures.signature_matches(request._request, params, secret):
            raise exceptions.AuthenticationFailed(INVALID_SIGNATURE)
        if not signatures.claim(key.pk, params):
            raise exceptions.AuthenticationFailed("Signature already used (replay)")
        self._touch(key)
        _mark(request, AuthInfo("signature", None, f"key {key.label or key.id}"))
        return key.user, key

    def _key(self, key_id: str) -> AccessKey | None:
        try:
            pk = uuid.UUID(key_id)
        except ValueError:
            return None
        if str(pk) != key_id:  # one spelling per key (lowercase, hyphenated): see accounts.signatures
            return None
        key = AccessKey.objects.select_related("user").filter(pk=pk, is_active=True).first()
        if key is None or not key.user.is_active:
            return None
        return key

    def _touch(self, key: AccessKey) -> None:
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at >= timedelta(minutes=1):
            with best_effort():  # bookkeeping: never wait out a lock for it
                AccessKey.objects.filter(pk=key.pk).update(last_used_at=now)

    def authenticate_header(self, request) -> str:
        return 'Signature realm="tunnelsite",headers="(request-target) date"'


class LegacyApiKeyAuthentication(authentication.BaseAuthentication):
    """The autossh manager's ``API_KEY`` list as ``Bearer``, acting as ``TUNNELSITE_API_KEY_USER``.

    Also the catch-all: any other Authorization header reaching this class is a 401.
    """

    def authenticate(self, request):
        scheme, raw = _header(request)
        if not scheme:
            return None
        if scheme != "bearer" or not raw:
            if scheme == "token":
                raise exceptions.AuthenticationFailed(INVALID)
            raise exceptions.AuthenticationFailed("Unsupported authorization scheme; use Bearer, Token or Signature")
        if not matches_legacy_key(raw):
            raise exceptions.AuthenticationFailed(INVALID)
        user = legacy_user()
        if user is None:
            logger.error(
                "API_KEY is set but TUNNELSITE_API_KEY_USER=%r is not an active user; legacy keys are refused",
                settings.API_KEY_USER,
            )
            raise exceptions.AuthenticationFailed(INVALID)
        _mark(request, AuthInfo("legacy_key", None, "API_KEY"))
        return user, None

    def authenticate_header(self, request) -> str:
        return "Bearer"


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session auth (CSRF on unsafe methods), recorded as ``session``."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None:
            _mark(request, AuthInfo("session"))
        return result


def matches_legacy_key(raw: str) -> bool:
    # Compare against every key, without an early exit, in constant time each.
    found = False
    for key in settings.API_KEYS:
        found |= hmac.compare_digest(raw.encode(), key.encode())
    return found


def legacy_user():
    return get_user_model().objects.filter(username=settings.API_KEY_USER, is_active=True).first()


# The compat API (``tunnels.compat``): the original accepted ``Authorization: Bearer`` and nothing
# else, so ``Token`` and ``Signature`` headers are refused there (by the legacy class's catch-all).
COMPAT_AUTHENTICATION = [BearerTokenAuthentication, LegacyApiKeyAuthentication, SessionAuthentication]
