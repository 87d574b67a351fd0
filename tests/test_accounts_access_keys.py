"""/api/v1/access-keys/: create (secret once), list, enable/disable, delete; 10 per user; isolation."""

from __future__ import annotations

import pytest

from accounts import keys
from accounts.keys import MAX_KEYS_PER_USER
from accounts.models import AccessKey

pytestmark = pytest.mark.django_db
URL = "/api/v1/access-keys/"


def test_create_returns_the_secret_once(owner, owner_client):
    response = owner_client.post(URL, {"label": "laptop", "scopes": ["read"]}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["secret"] and body["scopes"] == ["read"] and body["is_active"] is True
    assert keys.secret_of(AccessKey.objects.get(pk=body["id"])) == body["secret"]
    listed = owner_client.get(URL).json()
    assert [row["id"] for row in listed] == [body["id"]]
    assert "secret" not in listed[0] and "secret_encrypted" not in listed[0]
    assert "secret" not in owner_client.get(f"{URL}{body['id']}/").json()


def test_at_most_ten_keys_per_user(owner, owner_client):
    for i in range(MAX_KEYS_PER_USER):
        keys.create(owner, label=f"k{i}")
    response = owner_client.post(URL, {"label": "one too many"}, format="json")
    assert response.status_code == 403
    assert "at most 10" in response.json()["error"]
    assert AccessKey.objects.filter(user=owner).count() == MAX_KEYS_PER_USER


def test_disable_and_enable(owner, owner_client):
    key, _ = keys.create(owner)
    response = owner_client.post(f"{URL}{key.id}/disable/")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert AccessKey.objects.get(pk=key.pk).is_active is False
    assert owner_client.post(f"{URL}{key.id}/enable/").json()["is_active"] is True


def test_delete_removes_the_key(owner, owner_client):
    key, _ = keys.create(owner)
    assert owner_client.delete(f"{URL}{key.id}/").status_code == 204
    assert not AccessKey.objects.filter(pk=key.pk).exists()


def test_other_user_gets_404_everywhere_and_sees_nothing(owner, other_client):
    key, _ = keys.create(owner)
    assert other_client.get(URL).json() == []
    for method, path in [
        ("get", f"{URL}{key.id}/"),
        ("delete", f"{URL}{key.id}/"),
        ("post", f"{URL}{key.id}/disable/"),
        ("post", f"{URL}{key.id}/enable/"),
    ]:
        assert getattr(other_client, method)(path).status_code == 404
    assert AccessKey.objects.get(pk=key.pk).is_active is True


def test_staff_sees_all_keys(owner, staff_client):
    keys.create(owner)
    assert [row["id"] for row in staff_client.get(URL, {"user": "alice"}).json()]


def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries):
    for _ in range(4):
        keys.create(owner)
    owner_client.get(URL)
    with django_assert_num_queries(3):
        assert len(owner_client.get(URL).json()) == 4
