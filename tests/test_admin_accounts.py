"""The admin's credentials (made by the API's own functions, secret shown once), users' limits, worker nodes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import keys, tokens
from accounts.models import AccessKey, ApiToken
from tunnels.models import WorkerNode

pytestmark = pytest.mark.django_db
TOKENS = "/admin/accounts/apitoken/"
KEYS = "/admin/accounts/accesskey/"
ME = "/api/v1/users/me/"


@pytest.fixture
def root(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return user


def shown(page: str, field: str) -> str:
    match = re.search(rf'data-field="{field}">([^<]+)</code>', page)
    assert match, page[:3000]
    return match.group(1)


def test_token_add_page_has_scope_checkboxes_with_a_default_that_validates(client, root):
    page = client.get(f"{TOKENS}add/").content.decode()
    for scope in ("read", "operate", "write", "admin"):
        assert f'type="checkbox" name="scopes" value="{scope}"' in page
    for scope in ("read", "operate", "write"):
        assert re.search(rf'value="{scope}"[^>]*checked', page), scope
    assert not re.search(r'value="admin"[^>]*checked', page)
    assert "digest" not in page and "pepper" not in page


def test_token_added_in_the_admin_works_and_is_shown_once(client, root, owner):
    form = {"user": owner.pk, "label": "from admin", "kind": "private", "scopes": ["read"], "expires_in_days": "7"}
    response = client.post(f"{TOKENS}add/", form)
    assert response.status_code == 200
    page = response.content.decode()
    raw = shown(page, "token")
    assert "tunnelsite administration" in page and "Log out" in page  # an admin page like the others
    token = ApiToken.objects.get(user=owner)
    assert raw.startswith(token.prefix + "_") and token.digest and token.scopes == ["read"]
    assert token.expires_at > timezone.now() + timedelta(days=6)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    me = api.get(ME)
    assert me.status_code == 200 and me.json()["username"] == owner.username
    assert api.post("/api/v1/tunnels/", {}, format="json").status_code == 403  # read only

    secret = raw.rsplit("_", 1)[1]
    for url in (TOKENS, f"{TOKENS}{token.pk}/change/"):
        later = client.get(url).content.decode()
        assert token.prefix in later and secret not in later


def test_token_admin_scope_is_refused_for_an_ordinary_user(client, root, owner):
    form = {"user": owner.pk, "label": "x", "kind": "private", "scopes": ["read", "admin"]}
    response = client.post(f"{TOKENS}add/", form)
    assert response.status_code == 200 and b"only available to staff users" in response.content
    assert not ApiToken.objects.exists()
    assert client.post(f"{TOKENS}add/", {**form, "scopes": []}).status_code == 200
    assert not ApiToken.objects.exists()


def test_token_scopes_are_changed_with_checkboxes(client, root, owner):
    client.post(f"{TOKENS}add/", {"user": owner.pk, "label": "x", "kind": "private", "scopes": ["read"]})
    token = ApiToken.objects.get()
    form = {"label": "renamed", "scopes": ["read", "write"], "expires_at_0": "", "expires_at_1": ""}
    form.update(revoked_at_0="", revoked_at_1="")
    response = client.post(f"{TOKENS}{token.pk}/change/", form)
    assert response.status_code == 302, response.content[:3000]
    token.refresh_from_db()
    assert (token.label, token.scopes) == ("renamed", ["read", "write"])


def test_access_key_added_in_the_admin_has_a_working_secret_shown_once(client, root, owner):
    response = client.post(f"{KEYS}add/", {"user": owner.pk, "label": "signer", "scopes": ["read", "operate"]})
    assert response.status_code == 200
    page = response.content.decode()
    key = AccessKey.objects.get(user=owner)
    assert shown(page, "key id") == str(key.pk)
    secret = shown(page, "secret")
    assert keys.secret_of(key) == secret and key.scopes == ["operate", "read"]
    assert secret not in client.get(f"{KEYS}{key.pk}/change/").content.decode()


def test_access_key_limit_is_a_form_error(client, root, owner):
    for index in range(keys.MAX_KEYS_PER_USER):
        keys.create(owner, label=f"k{index}")
    response = client.post(f"{KEYS}add/", {"user": owner.pk, "label": "one more", "scopes": ["read"]})
    assert response.status_code == 200 and b"access key limit reached" in response.content
    assert AccessKey.objects.filter(user=owner).count() == keys.MAX_KEYS_PER_USER


def test_user_page_shows_effective_limits(client, root, owner):
    page = client.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()
    assert f"{settings.DEFAULT_MAX_TUNNELS} (the server-wide default)" in page
    owner.max_tunnels = 3
    owner.save()
    page = client.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()
    assert "3 (this user&#x27;s own limit)" in page


def test_worker_nodes_show_heartbeat_age_and_stale_ones(client, root):
    now = timezone.now()
    WorkerNode.objects.create(name="fresh-node", last_seen=now)
    lease = settings.WORKER_LEASE_SECONDS
    WorkerNode.objects.create(name="old-node", last_seen=now - timedelta(seconds=lease + 30))
    response = client.get("/admin/tunnels/workernode/")
    rows = {
        name: row
        for row in response.content.decode().split("<tr")
        for name in ("fresh-node", "old-node")
        if f">{name}<" in row
    }
    assert ">alive<" in rows["fresh-node"] and ">stale<" not in rows["fresh-node"]
    assert ">stale<" in rows["old-node"]
    age = re.search(r"(\d+) s ago", rows["old-node"])
    assert age and lease + 30 <= int(age.group(1)) <= lease + 40


def test_revoke_action_stops_tokens_working(client, root, owner):
    token, raw = tokens.mint(owner, label="leaked")
    kept, _ = tokens.mint(owner, label="kept")
    response = client.post(TOKENS, {"action": "revoke_tokens", "_selected_action": [token.pk]}, follow=True)
    assert "1 revoked" in response.content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get(ME).status_code == 401
    token.refresh_from_db(), kept.refresh_from_db()
    assert token.revoked_at is not None and kept.revoked_at is None
