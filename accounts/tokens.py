"""API token minting and checking. Only this module knows the token format."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import DEFAULT_SCOPES, SCOPE_ADMIN, ApiToken
from tunnelsite.dblocks import best_effort

PREFIX = "tsk_"
LOOKUP_BYTES = 9
LOOKUP_CHARS = 12  # token_urlsafe(9) is always 12 characters
SECRET_BYTES = 32


def pepper(pepper_id: str | None = None) -> bytes | None:
    """The server key that digests are keyed with, or None for a retired, unknown id.

    ``TUNNELSITE_TOKEN_PEPPER`` (id ``TUNNELSITE_TOKEN_PEPPER_ID``) when set,
    else derived from SECRET_KEY. The id stored per token lets a rotated pepper
    keep old tokens verifiable while it is listed in ``TUNNELSITE_TOKEN_OLD_PEPPERS``.
    """
    current_id = getattr(settings, "TOKEN_PEPPER_ID", "default")
    pepper_id = pepper_id or current_id
    if pepper_id == current_id:
        base = settings.TOKEN_PEPPER or f"tunnelsite-token-pepper:{settings.SECRET_KEY}"
    else:
        base = getattr(settings, "TOKEN_OLD_PEPPERS", {}).get(pepper_id)
        if not base:
            return None
    return hashlib.sha256(f"{pepper_id}:{base}".encode()).digest()


def digest(secret: str, pepper_id: str | None = None) -> str:
    key = pepper(pepper_id)
    if key is None:
        return ""  # never equal to a stored digest
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def split_raw(raw: str) -> tuple[str, str] | None:
    """``tsk_<lookup>_<secret>`` → (lookup, secret); None when it is not one of ours."""
    if not raw.startswith(PREFIX):
        return None
    # The lookup is url-safe base64 and may itself contain "_", so it is
    # split off by its fixed length rather than at the first "_".
    body = raw[len(PREFIX) :]
    if len(body) < LOOKUP_CHARS + 2 or body[LOOKUP_CHARS] != "_":
        return None
    return body[:LOOKUP_CHARS], body[LOOKUP_CHARS + 1 :]


ADMIN_ONLY_STAFF = "the 'admin' scope is only available to staff users"


def scope_problem(user, scopes) -> str | None:
    """Why ``user`` may not hold a credential with ``scopes`` (tokens and access keys), or None."""
    if SCOPE_ADMIN in scopes and not user.is_staff:
        return ADMIN_ONLY_STAFF
    return None


def mint(
    user,
    *,
    label: str = "",
    scopes: list[str] | None = None,
    kind: str = ApiToken.KIND_PRIVATE,
    expires_in: int | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the raw token, which is never stored."""
    lookup = secrets.token_urlsafe(LOOKUP_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
    token = ApiToken.objects.create(
        user=user,
        label=label,
        kind=kind,
        lookup=lookup,
        digest=digest(secret),
        pepper_id=getattr(settings, "TOKEN_PEPPER_ID", "default"),
        scopes=list(DEFAULT_SCOPES if scopes is None else scopes),
        expires_at=expires_at,
    )
    return token, f"{PREFIX}{lookup}_{secret}"


def verify(raw: str) -> ApiToken | None:
    """The usable token ``raw`` names, or None. Unknown and wrong look the same."""
    parts = split_raw(raw)
    if parts is None:
        return None
    lookup, secret = parts
    # get(), not first(): ``lookup`` is unique, and first()'s ORDER BY costs a
    # noticeable share of every authenticated request.
    try:
        token = ApiToken.objects.select_related("user").get(lookup=lookup)
    except ApiToken.DoesNotExist:
        # Spend the same HMAC work as a real check so timing does not tell.
        hmac.compare_digest(digest(secret), "0" * 64)
        return None
    if not hmac.compare_digest(digest(secret, token.pepper_id), token.digest):
        return None
    if not token.is_usable() or not token.user.is_active:
        return None
    return token


LAST_USED_INTERVAL = timedelta(minutes=1)


def touch(token: ApiToken) -> None:
    """Record use at most once a minute per token (a write per request would hurt); skipped
    rather than waited for while the database is locked."""
    now = timezone.now()
    if token.last_used_at and now - token.last_used_at < LAST_USED_INTERVAL:
        return
    with best_effort():
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


def unrevoked(queryset):
    """The tokens of ``queryset`` that were not revoked (lists show these; expired ones too, marked)."""
    return queryset.filter(revoked_at__isnull=True)


def revoke(token: ApiToken) -> None:
    """The token stops working at once; its row stays so the request history can still name it."""
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
    token.revoked_at = token.revoked_at or now
