"""/api/v1/tokens/: list, create (raw once), retrieve, revoke; isolation between users."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import ApiToken
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
URL = "/api/v1/tokens/"


def test_create_returns_the_raw_token_once_in_rustunnel_shape(owner, owner_client):
    response = owner_client.post(URL, {"label": "ci-deploy", "scopes": ["read"], "expires_in": 3600}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert {"id", "label", "token", "scopes", "expires_at", "prefix", "kind", "created_at"} <= set(body)
    assert body["label"] == "ci-deploy" and body["scopes"] == ["read"] and body["expires_at"]
    assert body["token"].startswith(body["prefix"] + "_")
    listed = owner_client.get(URL).json()
    assert all("token" not in row and "digest" not in row for row in listed)
    new = APIClient()
    new.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert new.get("/api/v1/users/me/").json()["scopes"] == ["read"]


def test_create_without_label_is_400(owner_client):
    response = owner_client.post(URL, {}, format="json")
    assert response.status_code == 400
    assert "label" in response.json()["fields"]


def test_unknown_scope_is_400(owner_client):
    assert owner_client.post(URL, {"label": "x", "scopes": ["root"]}, format="json").status_code == 400


def test_bad_scope_messages_stay_a_flat_list_under_the_field_name(owner_client):
    # DRF nests list-item errors by index; the v1 error body keeps {"field": ["message", ...]}.
    response = owner_client.post(URL, {"label": "x", "scopes": ["read", "root"]}, format="json")
    assert response.json()["fields"] == {"scopes": ['1: "root" is not a valid choice.']}


def test_non_staff_cannot_mint_admin_tokens(owner_client):
    response = owner_client.post(URL, {"label": "x", "scopes": ["admin"]}, format="json")
    assert response.status_code == 400
    assert "admin" in response.json()["error"]


def test_a_token_cannot_mint_scopes_it_lacks(owner):
    client = client_for(owner, ["read", "write"])
    response = client.post(URL, {"label": "x", "scopes": ["operate"]}, format="json")
    assert response.status_code == 400
    assert "operate" in response.json()["error"]


def test_list_shows_own_tokens_without_secrets(owner, other, owner_client):
    tokens.mint(other, label="bobs")
    rows = owner_client.get(URL).json()
    assert [row["label"] for row in rows] == ["test"]
    assert set(rows[0]) == {
        "id",
        "label",
        "kind",
        "prefix",
        "scopes",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
    }


def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries):
    for i in range(5):
        tokens.mint(owner, label=f"t{i}")
    owner_client.get(URL)  # first use writes last_used_at
    # auth lookup, token list, request-history insert
    with django_assert_num_queries(3):
        assert len(owner_client.get(URL).json()) == 6


def test_other_user_gets_404_on_retrieve_and_delete(owner, other_client):
    token, _ = tokens.mint(owner, label="mine")
    assert other_client.get(f"{URL}{token.id}/").status_code == 404
    assert other_client.delete(f"{URL}{token.id}/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_delete_revokes_and_the_token_stops_working(owner, owner_client):
    token, raw = tokens.mint(owner, label="leaked")
    assert owner_client.delete(f"{URL}{token.id}/").status_code == 204
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    victim = APIClient()
    victim.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert victim.get("/api/v1/users/me/").status_code == 401
    assert owner_client.get(f"{URL}{token.id}/").status_code == 404


def test_staff_lists_everyones_tokens_and_filters_by_user(owner, other, staff_client):
    tokens.mint(owner, label="alices")
    tokens.mint(other, label="bobs")
    everyone = {row["user"] for row in staff_client.get(URL).json()}
    assert {"alice", "bob", "carol"} <= everyone
    only_bob = staff_client.get(URL, {"user": "bob"}).json()
    assert [row["label"] for row in only_bob] == ["bobs"]


def test_staff_without_admin_scope_sees_only_own_tokens(owner, staff):
    tokens.mint(owner, label="alices")
    client = client_for(staff, ["read", "write"])
    assert {row["user"] for row in client.get(URL).json()} == {"carol"}


def test_user_filter_does_not_widen_a_non_staff_view(owner, other, owner_client):
    tokens.mint(other, label="bobs")
    # ?user= is ignored for non-staff: still only their own rows.
    assert {row["user"] for row in owner_client.get(URL, {"user": "bob"}).json()} == {"alice"}
