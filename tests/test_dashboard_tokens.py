"""Dashboard: the tokens page (/tokens/): create shown once, list, revoke, scoping, CSRF, errors."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts import tokens
from accounts.models import ApiToken

pytestmark = pytest.mark.django_db
URL = "/tokens/"
NEW_TOKEN = re.compile(r'value="(tsk_[A-Za-z0-9_-]+)"')


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def create(client: Client, **fields) -> object:
    body = {"label": "backup", "scopes": ["read"], "expires_in": "86400", **fields}
    return client.post(URL, body)


def test_anonymous_is_sent_to_login(client):
    response = client.get(URL)
    assert response.status_code == 302 and "next=/tokens/" in response["Location"]


def test_new_token_is_shown_once_and_works(alice, owner):
    response = create(alice)
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    raw = NEW_TOKEN.search(response.content.decode()).group(1)
    token = tokens.verify(raw)
    assert token.user == owner and token.label == "backup" and token.scopes == ["read"]
    assert token.expires_at is not None
    again = alice.get(URL).content.decode()
    assert raw not in again and token.prefix in again
    assert raw.removeprefix(token.prefix) not in again  # no part of the secret


def test_sending_the_same_form_again_mints_nothing_and_shows_no_secret(alice):
    first = create(alice, once="form-1")
    assert first.status_code == 201
    again = create(alice, once="form-1")
    assert again.status_code == 302 and again["Location"] == URL
    assert ApiToken.objects.count() == 1
    assert b"already sent" in alice.get(URL).content
    assert create(alice, once="form-2").status_code == 201  # a new form is a new token


def test_list_shows_only_own_unrevoked_tokens(alice, owner, other):
    mine, _ = tokens.mint(owner, label="mine")
    theirs, _ = tokens.mint(other, label="theirs")
    gone, _ = tokens.mint(owner, label="gone")
    tokens.revoke(gone)
    page = alice.get(URL).content.decode()
    assert mine.prefix in page and theirs.prefix not in page and gone.prefix not in page


def test_list_query_count_is_constant(alice, owner, django_assert_num_queries):
    for number in range(5):
        tokens.mint(owner, label=f"t{number}")
    with django_assert_num_queries(3):  # session, user, tokens
        assert alice.get(URL).status_code == 200


def test_staff_sees_only_their_own_tokens_here(owner, staff):
    tokens.mint(owner, label="alices")
    client = Client()
    client.force_login(staff)
    assert "alices" not in client.get(URL).content.decode()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"label": ""}, "This field is required."),
        ({"scopes": []}, "This field is required."),
        ({"scopes": ["admin"]}, "not one of the available choices"),
        ({"expires_in": "5"}, "not one of the available choices"),
    ],
)
def test_bad_input_is_400_with_the_error_and_creates_nothing(alice, fields, message):
    response = create(alice, **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ApiToken.objects.exists()


def test_staff_may_grant_admin(staff):
    client = Client()
    client.force_login(staff)
    assert create(client, scopes=["read", "admin"]).status_code == 201
    assert ApiToken.objects.get().scopes == ["admin", "read"]


def test_revoke_asks_then_revokes(alice, owner):
    token, raw = tokens.mint(owner, label="old")
    confirm = alice.get(f"{URL}{token.pk}/revoke/")
    assert confirm.status_code == 200 and b"Revoke token" in confirm.content
    assert tokens.verify(raw) is not None  # asking changes nothing
    response = alice.post(f"{URL}{token.pk}/revoke/")
    assert response.status_code == 302 and response["Location"] == URL
    assert tokens.verify(raw) is None


def test_another_users_token_is_404(alice, other):
    token, raw = tokens.mint(other, label="theirs")
    assert alice.get(f"{URL}{token.pk}/revoke/").status_code == 404
    response = alice.post(f"{URL}{token.pk}/revoke/")
    assert response.status_code == 404 and b"Not found" in response.content  # the dashboard's page
    assert tokens.verify(raw) is not None
    assert alice.get(f"{URL}not-a-uuid/revoke/").status_code == 404


def test_changes_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    token, raw = tokens.mint(owner, label="kept")
    assert client.post(URL, {"label": "x", "scopes": ["read"]}).status_code == 403
    assert client.post(f"{URL}{token.pk}/revoke/").status_code == 403
    assert ApiToken.objects.count() == 1 and tokens.verify(raw) is not None
