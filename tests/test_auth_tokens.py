"""API token authentication: Bearer and Token keywords, every way a token can be wrong."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import ApiToken

pytestmark = pytest.mark.django_db
ME = "/api/v1/users/me/"


def get_me(header: str | None):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client.get(ME)


def test_bearer_token_authenticates(owner):
    _, raw = tokens.mint(owner, label="ci")
    response = get_me(f"Bearer {raw}")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert response.json()["auth_method"] == "token"


def test_token_keyword_is_accepted_like_jumpserver_private_tokens(owner):
    _, raw = tokens.mint(owner)
    assert get_me(f"Token {raw}").json()["username"] == "alice"


def test_keyword_is_case_insensitive(owner):
    _, raw = tokens.mint(owner)
    assert get_me(f"bearer {raw}").status_code == 200


def test_no_credentials_is_401_with_bearer_challenge():
    response = get_me(None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert "error" in response.json()


def test_wrong_secret_is_401(owner):
    _, raw = tokens.mint(owner)
    response = get_me(f"Bearer {raw[:-4]}AAAA")
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or expired token"}


def test_unknown_lookup_and_wrong_secret_answer_identically(owner):
    token, raw = tokens.mint(owner)
    wrong_secret = get_me(f"Bearer {raw[:-4]}AAAA")
    unknown_lookup = get_me(f"Bearer tsk_{'Z' * 12}_{raw.split('_', 2)[-1]}")
    assert unknown_lookup.status_code == wrong_secret.status_code == 401
    assert unknown_lookup.json() == wrong_secret.json()
    assert unknown_lookup.headers["WWW-Authenticate"] == wrong_secret.headers["WWW-Authenticate"]


def test_expired_token_is_401(owner):
    token, raw = tokens.mint(owner, expires_in=60)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert get_me(f"Bearer {raw}").status_code == 401


def test_revoked_token_is_401(owner):
    token, raw = tokens.mint(owner)
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    assert get_me(f"Bearer {raw}").status_code == 401


def test_token_of_a_deactivated_user_is_401(owner):
    _, raw = tokens.mint(owner)
    owner.is_active = False
    owner.save()
    assert get_me(f"Bearer {raw}").status_code == 401


@pytest.mark.parametrize("header", ["Basic YWxpY2U6YWxpY2UtcGFzcy0xMjM=", "Bearer", "Token not-a-token", "Digest x"])
def test_wrong_scheme_or_malformed_credential_is_401_not_anonymous(owner, header):
    response = get_me(header)
    assert response.status_code == 401


def test_bearer_token_for_a_malformed_tsk_value_is_401(owner):
    assert get_me("Bearer tsk_short").status_code == 401


def test_present_but_invalid_token_is_401_even_on_the_anonymous_login_endpoint_family(owner):
    # A bad credential never silently becomes anonymous, also alongside a valid session.
    client = APIClient()
    client.force_login(owner)
    client.credentials(HTTP_AUTHORIZATION="Bearer tsk_AAAAAAAAAAAA_wrong")
    assert client.get(ME).status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(owner):
    token, raw = tokens.mint(owner)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def token_updates() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(ME).status_code == 200
        return sum(1 for q in queries if q["sql"].startswith("UPDATE") and "accounts_apitoken" in q["sql"])

    assert token_updates() == 1
    assert token_updates() == 0
    assert token_updates() == 0
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - timedelta(seconds=61))
    assert token_updates() == 1
    token.refresh_from_db()
    assert timezone.now() - token.last_used_at < timedelta(seconds=5)


def test_rotated_pepper_keeps_old_tokens_valid_while_listed(owner, settings):
    old_token, old_raw = tokens.mint(owner)
    assert old_token.pepper_id == "default"
    old_pepper = settings.TOKEN_PEPPER or f"tunnelsite-token-pepper:{settings.SECRET_KEY}"
    settings.TOKEN_PEPPER = "a-brand-new-pepper-value-0123456789"
    settings.TOKEN_PEPPER_ID = "2026"
    settings.TOKEN_OLD_PEPPERS = {"default": old_pepper}
    new_token, new_raw = tokens.mint(owner)
    assert new_token.pepper_id == "2026"
    assert get_me(f"Bearer {old_raw}").status_code == 200
    assert get_me(f"Bearer {new_raw}").status_code == 200
    settings.TOKEN_OLD_PEPPERS = {}
    assert get_me(f"Bearer {old_raw}").status_code == 401
    assert get_me(f"Bearer {new_raw}").status_code == 200


def test_only_lookup_and_digest_are_stored(owner):
    token, raw = tokens.mint(owner)
    secret = raw.split("_", 1)[1][13:]
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(secret not in str(value) for value in stored.values())
    assert len(stored["digest"]) == 64
