"""Dashboard: the access keys page (/access-keys/): secret shown once, list, disable/enable, delete,
scoping, CSRF, the per-user limit."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts import keys
from accounts.models import AccessKey

pytestmark = pytest.mark.django_db
URL = "/access-keys/"
SECRET = re.compile(r'id="new-key-secret" class="mono" type="text" value="([A-Za-z0-9_-]+)"')


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def create(client: Client, **fields) -> object:
    return client.post(URL, {"label": "deploy", "scopes": ["read"], **fields})


def test_anonymous_is_sent_to_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and "next=/access-keys/" in response["Location"]


def test_header_links_the_page(alice):
    assert f'href="{URL}"'.encode() in alice.get("/tokens/").content


def test_new_secret_is_shown_once_and_is_the_keys(alice, owner):
    response = create(alice)
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    secret = SECRET.search(response.content.decode()).group(1)
    key = AccessKey.objects.get()
    assert key.user == owner and key.label == "deploy" and key.scopes == ["read"] and key.is_active
    assert keys.secret_of(key) == secret
    again = alice.get(URL)
    assert secret not in again.content.decode() and str(key.id) in again.content.decode()
    assert "no-store" not in again.get("Cache-Control", "")


def test_sending_the_same_form_again_creates_nothing_and_shows_no_secret(alice):
    assert create(alice, once="form-1").status_code == 201
    again = create(alice, once="form-1")
    assert again.status_code == 302 and again["Location"] == URL
    assert AccessKey.objects.count() == 1
    assert b"already sent" in alice.get(URL).content
    assert create(alice, once="form-2").status_code == 201


def test_list_shows_only_own_keys(alice, owner, other, staff):
    mine, _ = keys.create(owner, label="mine")
    theirs, _ = keys.create(other, label="theirs")
    page = alice.get(URL).content.decode()
    assert str(mine.id) in page and str(theirs.id) not in page
    client = Client()
    client.force_login(staff)
    assert str(mine.id) not in client.get(URL).content.decode()  # staff use the admin for others' keys


def test_list_query_count_is_constant(alice, owner, django_assert_num_queries):
    for number in range(5):
        keys.create(owner, label=f"k{number}")
    with django_assert_num_queries(3):  # session, user, keys
        assert alice.get(URL).status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scopes": []}, "This field is required."),
        ({"scopes": ["admin"]}, "not one of the available choices"),
        ({"label": "x" * 101}, "at most 100 characters"),
    ],
)
def test_bad_input_is_400_with_the_error_and_creates_nothing(alice, fields, message):
    response = create(alice, **fields)
    assert response.status_code == 400 and message in response.content.decode()
    assert not AccessKey.objects.exists()


def test_the_limit_is_refused_clearly(alice, owner):
    for number in range(keys.MAX_KEYS_PER_USER):
        keys.create(owner, label=f"k{number}")
    response = create(alice)
    assert response.status_code == 403 and b"access key limit reached" in response.content
    assert AccessKey.objects.count() == keys.MAX_KEYS_PER_USER
    assert not SECRET.search(response.content.decode())


def test_disable_asks_then_disables_and_enable_restores(alice, owner):
    key, _ = keys.create(owner, label="k")
    confirm = alice.get(f"{URL}{key.pk}/disable/")
    assert confirm.status_code == 200 and b"Disable access key" in confirm.content
    assert AccessKey.objects.get().is_active  # asking changes nothing
    assert alice.post(f"{URL}{key.pk}/disable/")["Location"] == URL
    assert not AccessKey.objects.get().is_active
    assert alice.get(f"{URL}{key.pk}/enable/").status_code == 405  # a change is a POST
    assert alice.post(f"{URL}{key.pk}/enable/")["Location"] == URL
    assert AccessKey.objects.get().is_active


def test_delete_asks_then_deletes(alice, owner):
    key, _ = keys.create(owner, label="k")
    confirm = alice.get(f"{URL}{key.pk}/delete/")
    assert confirm.status_code == 200 and b"Delete access key" in confirm.content
    assert AccessKey.objects.exists()
    assert alice.post(f"{URL}{key.pk}/delete/")["Location"] == URL
    assert not AccessKey.objects.exists()


@pytest.mark.parametrize("action", ["disable", "enable", "delete"])
def test_another_users_key_is_404(alice, other, action):
    key, _ = keys.create(other, label="theirs")
    AccessKey.objects.filter(pk=key.pk).update(is_active=action != "enable")
    if action != "enable":
        assert alice.get(f"{URL}{key.pk}/{action}/").status_code == 404
    response = alice.post(f"{URL}{key.pk}/{action}/")
    assert response.status_code == 404 and b"Not found" in response.content
    row = AccessKey.objects.get()
    assert row.is_active == (action != "enable")
    assert alice.get(f"{URL}not-a-uuid/delete/").status_code == 404


def test_changes_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    key, _ = keys.create(owner, label="kept")
    assert client.post(URL, {"label": "x", "scopes": ["read"]}).status_code == 403
    for action in ("disable", "delete"):
        assert client.post(f"{URL}{key.pk}/{action}/").status_code == 403
    assert AccessKey.objects.count() == 1 and AccessKey.objects.get().is_active
