"""POST /api/v1/authentication/auth/: temporary tokens from username + password, throttled failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from accounts.models import ApiToken

pytestmark = pytest.mark.django_db
AUTH = "/api/v1/authentication/auth/"


def login(username: str, password: str, address: str = "10.0.0.1", fmt: str = "json"):
    return APIClient().post(AUTH, {"username": username, "password": password}, format=fmt, REMOTE_ADDR=address)


def test_login_returns_a_jumpserver_shaped_temporary_token(owner, settings):
    settings.TOKEN_TTL = 3600
    response = login("alice", "alice-pass-123")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "keyword", "date_expired"}
    assert body["keyword"] == "Bearer"
    expires = parse_datetime(body["date_expired"])
    assert timedelta(minutes=59) < expires - timezone.now() <= timedelta(hours=1)
    token = ApiToken.objects.get(user=owner)
    assert token.kind == ApiToken.KIND_TEMPORARY
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert client.get("/api/v1/users/me/").json()["username"] == "alice"


def test_login_accepts_form_data_like_the_jumpserver_python_example(owner):
    assert login("alice", "alice-pass-123", fmt="multipart").status_code == 201


def test_wrong_password_and_unknown_user_get_the_same_generic_400(owner):
    wrong = login("alice", "nope")
    unknown = login("zed", "nope")
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json() == {"error": "Invalid username or password"}
    assert not ApiToken.objects.exists()


def test_deactivated_user_cannot_log_in(owner):
    owner.is_active = False
    owner.save()
    assert login("alice", "alice-pass-123").status_code == 400


def test_missing_fields_are_400_naming_them():
    response = APIClient().post(AUTH, {}, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"username", "password"}


def test_repeated_failures_for_one_username_are_throttled_from_any_address(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login_username": "3/minute"},
    }
    for attempt in range(3):
        assert login("alice", "wrong", address=f"10.0.1.{attempt}").status_code == 400
    throttled = login("alice", "alice-pass-123", address="10.0.2.1")
    assert throttled.status_code == 429
    assert throttled.json()["retry_after"] >= 1
    assert "error" in throttled.json()
    assert login("bob", "whatever", address="10.0.2.1").status_code == 400  # other usernames unaffected


def test_repeated_failures_from_one_address_are_throttled_for_every_username(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login_address": "3/minute"},
    }
    for name in ("u1", "u2", "u3"):
        assert login(name, "wrong", address="10.9.9.9").status_code == 400
    assert login("alice", "alice-pass-123", address="10.9.9.9").status_code == 429
    assert login("alice", "alice-pass-123", address="10.9.9.10").status_code == 201


def test_successful_logins_are_not_counted_as_failures(owner, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "login_username": "2/minute"},
    }
    for _ in range(4):
        assert login("alice", "alice-pass-123").status_code == 201


def test_failure_counts_live_in_the_shared_database_cache(owner):
    from django.core.cache import caches

    login("alice", "wrong", address="10.7.7.7")
    from accounts.throttles import LoginAddressThrottle

    key = LoginAddressThrottle.cache_format % {"scope": "login_address", "ident": "10.7.7.7"}
    assert len(caches["shared"].get(key)) == 1


def test_general_user_throttle_gives_429_with_retry_after(owner, settings):
    from tests.conftest import client_for

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/minute"},
    }
    client = client_for(owner)
    assert client.get("/api/v1/users/me/").status_code == 200
    assert client.get("/api/v1/users/me/").status_code == 200
    response = client.get("/api/v1/users/me/")
    assert response.status_code == 429
    assert response.json()["retry_after"] > 0
