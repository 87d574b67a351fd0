"""manage.py createtoken and prunerequests."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import tokens
from accounts.models import ApiRequest, ApiToken

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_createtoken_prints_a_working_token_last(owner):
    output = run("createtoken", "alice", "--label", "cron", "--scope", "read", "--scope", "operate")
    raw = output.strip().splitlines()[-1]
    token = tokens.verify(raw)
    assert token is not None and token.user == owner
    assert token.label == "cron" and token.scopes == ["operate", "read"] and token.expires_at is None


def test_createtoken_expiry(owner):
    raw = run("createtoken", "alice", "--expires-in", "120").strip().splitlines()[-1]
    token = tokens.verify(raw)
    assert timedelta(seconds=100) < token.expires_at - timezone.now() <= timedelta(seconds=120)


def test_createtoken_default_scopes_include_admin_for_staff_only(owner, staff):
    assert "admin" not in tokens.verify(run("createtoken", "alice").strip().splitlines()[-1]).scopes
    assert "admin" in tokens.verify(run("createtoken", "carol").strip().splitlines()[-1]).scopes


def test_createtoken_unknown_user_fails():
    with pytest.raises(CommandError, match="no such user"):
        run("createtoken", "nobody")
    assert not ApiToken.objects.exists()


def test_prunerequests_deletes_only_old_rows(owner):
    now = timezone.now()
    for age in (1, 10, 40):
        ApiRequest.objects.create(
            created_at=now - timedelta(days=age), method="GET", path="/list", status=200, duration_ms=1
        )
    assert "Deleted 1 request" in run("prunerequests")
    assert ApiRequest.objects.count() == 2
    run("prunerequests", "--days", "5")
    assert ApiRequest.objects.count() == 1


def create_user(*args, stdin: str = "") -> str:
    out = StringIO()
    call_command("createuser", *args, stdin=StringIO(stdin), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_createuser_makes_an_ordinary_user_who_can_log_in(django_user_model):
    from rest_framework.test import APIClient

    output = create_user("bob", "--email", "bob@example.com", "--password-stdin", stdin="a long pass phrase 42\n")
    assert "Created user bob (not staff)" in output
    bob = django_user_model.objects.get(username="bob")
    assert (bob.email, bob.is_staff, bob.is_superuser, bob.is_active) == ("bob@example.com", False, False, True)
    login = APIClient().post(
        "/api/v1/authentication/auth/", {"username": "bob", "password": "a long pass phrase 42"}, format="json"
    )
    assert login.status_code == 201, login.content
    me = APIClient()
    me.credentials(HTTP_AUTHORIZATION=f"Bearer {login.json()['token']}")
    assert me.get("/api/v1/users/me/").json()["username"] == "bob"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["alice", "--password-stdin"], "a long pass phrase 42\n", "already exists"),
        (["bad name!", "--password-stdin"], "a long pass phrase 42\n", "username"),
        (["carol", "--email", "not-an-address", "--password-stdin"], "a long pass phrase 42\n", "email"),
        (["carol", "--password-stdin"], "\n", "no password"),
        (["carol", "--password-stdin"], "123\n", "password refused"),
        (["carol"], "", "not a terminal"),
    ],
)
def test_createuser_refusals_create_nothing(args, stdin, message, owner, django_user_model):
    with pytest.raises(CommandError) as refused:
        create_user(*args, stdin=stdin)
    assert message in str(refused.value).lower()
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["alice"]
