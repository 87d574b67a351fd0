"""Dashboard: the known hosts page (/known-hosts/): list, accept a changed key, delete."""

from __future__ import annotations

import pytest
from django.test import Client

from tunnels.models import HostKeyState, KnownHost

pytestmark = pytest.mark.django_db
URL = "/known-hosts/"


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def known(owner, host: str = "ssh.example.com", *, changed: bool = False, offered: str = "T0ZGRVJFRA==") -> KnownHost:
    row = KnownHost.objects.create(
        owner=owner, host=host, port=2222, key_type="ssh-ed25519", key="UElOTkVE", fingerprint=f"SHA256:old-{host}"
    )
    if changed:
        row.state = HostKeyState.CHANGED
        row.offered_key = offered
        row.offered_fingerprint = f"SHA256:new-{host}"
        row.save()
    return row


def test_list_shows_own_entries_with_state(alice, owner, other, django_assert_num_queries):
    known(owner, "a.example.com")
    known(owner, "b.example.com", changed=True)
    known(other, "theirs.example.com")
    with django_assert_num_queries(3):  # session, user, rows
        page = alice.get(URL).content.decode()
    assert "SHA256:old-a.example.com" in page and "SHA256:new-b.example.com" in page
    assert "theirs.example.com" not in page
    assert page.count(">changed<") == 1 and page.count(">trusted<") == 1
    assert page.count("Accept…") == 1


def test_accept_asks_then_trusts_the_offered_key(alice, owner):
    row = known(owner, changed=True)
    confirm = alice.get(f"{URL}{row.pk}/accept/")
    assert confirm.status_code == 200 and b"SHA256:new-ssh.example.com" in confirm.content
    assert alice.post(f"{URL}{row.pk}/accept/").status_code == 302
    row.refresh_from_db()
    assert (row.state, row.key, row.fingerprint) == (HostKeyState.TRUSTED, "T0ZGRVJFRA==", "SHA256:new-ssh.example.com")


def test_accepting_an_unchanged_key_is_409_with_the_reason(alice, owner):
    row = known(owner)
    response = alice.post(f"{URL}{row.pk}/accept/")
    assert response.status_code == 409 and "has not changed: nothing to accept" in response.content.decode()


def test_accept_without_an_offered_key_says_to_delete(alice, owner):
    row = known(owner, changed=True, offered="")
    response = alice.post(f"{URL}{row.pk}/accept/")
    assert response.status_code == 409 and "delete the entry" in response.content.decode()
    row.refresh_from_db()
    assert row.state == HostKeyState.CHANGED


def test_delete_asks_then_forgets(alice, owner):
    row = known(owner)
    assert alice.get(f"{URL}{row.pk}/delete/").status_code == 200
    assert KnownHost.objects.exists()
    assert alice.post(f"{URL}{row.pk}/delete/").status_code == 302
    assert not KnownHost.objects.exists()


@pytest.mark.parametrize("action", ["accept", "delete"])
def test_another_users_entry_is_404(alice, other, action):
    row = known(other, changed=True)
    assert alice.get(f"{URL}{row.pk}/{action}/").status_code == 404
    assert alice.post(f"{URL}{row.pk}/{action}/").status_code == 404
    row.refresh_from_db()
    assert row.state == HostKeyState.CHANGED


def test_changes_need_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    row = known(owner, changed=True)
    assert client.post(f"{URL}{row.pk}/accept/").status_code == 403
    assert client.post(f"{URL}{row.pk}/delete/").status_code == 403
    row.refresh_from_db()
    assert row.state == HostKeyState.CHANGED


ED25519_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIC6VoQ2iGQ4pS5oW0Xx3xX0Z0m6g1vYb2gQ7p8m9n0Aa"


def test_pin_from_keyscan_output(alice, owner, other):
    response = alice.post(f"{URL}pin/", {"line": f"[ssh.example.com]:2222 ssh-ed25519 {ED25519_KEY}\n"})
    assert response.status_code == 302
    row = KnownHost.objects.get()
    assert (row.owner, row.host, row.port, row.source) == (owner, "ssh.example.com", 2222, "keyscan")
    again = alice.post(f"{URL}pin/", {"line": f"[ssh.example.com]:2222 ssh-ed25519 {ED25519_KEY}"})
    assert again.status_code == 409 and "already known" in again.content.decode()


def test_pin_refuses_junk_beside_the_field(alice):
    response = alice.post(f"{URL}pin/", {"line": "not a key"})
    assert response.status_code == 400 and "line 1:" in response.content.decode()
    assert not KnownHost.objects.exists()


def test_pin_needs_the_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(f"{URL}pin/", {"line": f"ssh.example.com ssh-ed25519 {ED25519_KEY}"}).status_code == 403
    assert not KnownHost.objects.exists()
