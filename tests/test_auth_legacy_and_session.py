"""Legacy API_KEY credentials and browser sessions."""

from __future__ import annotations

import logging

import pytest
from django.core import checks
from rest_framework.test import APIClient

from tunnelsite.env import env_list

pytestmark = pytest.mark.django_db
ME = "/api/v1/users/me/"


@pytest.fixture
def legacy(settings, django_user_model):
    settings.API_KEYS = ["key-one", "key-two"]
    settings.API_KEY_USER = "legacyadmin"
    return django_user_model.objects.create_user("legacyadmin", password="x-pass-123456")


def bearer(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def test_api_key_list_is_comma_separated_and_trimmed(monkeypatch):
    monkeypatch.setenv("API_KEY", " key-one , key-two,, ")
    assert env_list("API_KEY") == ["key-one", "key-two"]


def test_each_legacy_key_acts_as_the_configured_user(legacy):
    for key in ("key-one", "key-two"):
        response = bearer(key).get(ME)
        assert response.status_code == 200
        assert response.json()["username"] == "legacyadmin"
        assert response.json()["auth_method"] == "legacy_key"


def test_wrong_legacy_key_is_401(legacy):
    assert bearer("key-three").get(ME).status_code == 401
    assert bearer("key-one ").get(ME).status_code == 200  # the header value is trimmed like the env list


def test_legacy_key_is_not_accepted_with_the_token_keyword(legacy):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token key-one")
    assert client.get(ME).status_code == 401


def test_no_api_key_configured_means_every_bearer_value_is_401(settings, owner):
    settings.API_KEYS = []
    assert bearer("").get(ME).status_code == 401
    assert bearer("anything").get(ME).status_code == 401


def test_missing_legacy_user_is_401_with_a_clear_log_error(settings, caplog):
    settings.API_KEYS = ["key-one"]
    settings.API_KEY_USER = "nobody-here"
    with caplog.at_level(logging.ERROR, logger="tunnelsite.auth"):
        assert bearer("key-one").get(ME).status_code == 401
    assert "TUNNELSITE_API_KEY_USER='nobody-here'" in caplog.text


def test_system_check_warns_when_the_legacy_user_is_missing(settings):
    settings.API_KEYS = ["key-one"]
    settings.API_KEY_USER = "nobody-here"
    found = [m for m in checks.run_checks(tags=["tunnelsite"]) if m.id == "accounts.W001"]
    assert found and "nobody-here" in found[0].msg


def test_system_check_is_quiet_when_the_legacy_user_exists(legacy):
    assert not [m for m in checks.run_checks(tags=["tunnelsite"]) if m.id == "accounts.W001"]


def test_session_authenticates_and_is_recorded_as_session(owner):
    client = APIClient()
    client.force_login(owner)
    response = client.get(ME)
    assert response.status_code == 200
    assert response.json()["auth_method"] == "session"
    assert response.json()["scopes"] == ["operate", "read", "write"]


def test_session_unsafe_method_needs_csrf(owner):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post("/api/v1/tokens/", {"label": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_staff_session_carries_the_admin_scope(staff):
    client = APIClient()
    client.force_login(staff)
    assert "admin" in client.get(ME).json()["scopes"]
