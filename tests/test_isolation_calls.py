"""Issue 11: calls that act (connect, disconnect, set_allow_clientless) do not act on a session's GET.

A session cookie (SameSite=Lax) rides along on a cross-site top-level navigation such as
``<a href="https://tunnelsite/api/v1/calls/disconnect?tunnel=…">``, and CSRF protects only unsafe
methods; so a browser session must POST with its CSRF token. Token, access-key and API_KEY clients
keep sshreach's GET. The session here is a real admin login (login form, CSRF enforced).
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from accounts import keys
from tests.conftest import client_for
from tests.test_auth_signature import send, sign
from tunnels import services
from tunnels.models import Desired, Tunnel

pytestmark = pytest.mark.django_db
BASE = "/api/v1/calls/"
ACTING = [
    ("connect", {"wait": "0"}, {"desired_state": Desired.STOPPED}),
    ("disconnect", {"wait": "0"}, {"desired_state": Desired.RUNNING}),
    ("set_allow_clientless", {"allow": "false"}, {"auto_restart": True}),
]


def logged_in(user, password: str) -> Client:
    """A browser-like client that signs in through the admin login form, CSRF checks on."""
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = client.post(
        "/admin/login/", {"username": user.username, "password": password, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, response.content
    return client


def csrf_of(client: Client) -> str:
    client.get("/admin/")  # any page of the session's site hands out the cookie
    return client.cookies["csrftoken"].value


@pytest.fixture
def session(staff):
    return logged_in(staff, "carol-pass-123")


def tunnel_for(user, initial: dict) -> Tunnel:
    tunnel = services.create_tunnel(
        user, {"remote_host": "u@h", "remote_port": "80", "local_port": "23456"}, start=False
    )
    Tunnel.objects.filter(pk=tunnel.pk).update(auto_restart=True)
    if initial.get("desired_state") == Desired.RUNNING:
        services.request_start(Tunnel.objects.get(pk=tunnel.pk), services.Actor(user=user))
    return Tunnel.objects.get(pk=tunnel.pk)


def state(tunnel: Tunnel, fields: dict) -> dict:
    row = Tunnel.objects.get(pk=tunnel.pk)
    return {name: getattr(row, name) for name in fields}


@pytest.mark.parametrize(("name", "params", "initial"), ACTING)
def test_a_session_get_does_not_act(staff, session, name, params, initial):
    tunnel = tunnel_for(staff, initial)
    assert state(tunnel, initial) == initial
    generation = tunnel.generation
    response = session.get(f"{BASE}{name}", {"tunnel": tunnel.hash, **params})
    assert response.status_code == 405
    body = response.json()
    assert (body["error_code"], body["success"]) == (21, False)
    assert "POST" in body["message"] and "CSRF" in body["message"]
    assert state(tunnel, initial) == initial
    assert Tunnel.objects.get(pk=tunnel.pk).generation == generation


@pytest.mark.parametrize(("name", "params", "initial"), ACTING)
def test_a_session_post_without_csrf_is_refused(staff, session, name, params, initial):
    tunnel = tunnel_for(staff, initial)
    response = session.post(f"{BASE}{name}", {"tunnel": tunnel.hash, **params})
    assert response.status_code == 403
    assert response.json()["error_code"] == 23 and "CSRF" in response.json()["message"]
    assert state(tunnel, initial) == initial


@pytest.mark.parametrize(("name", "params", "initial"), ACTING)
def test_a_session_post_with_its_csrf_token_acts(staff, session, name, params, initial):
    tunnel = tunnel_for(staff, initial)
    response = session.post(f"{BASE}{name}", {"tunnel": tunnel.hash, **params}, HTTP_X_CSRFTOKEN=csrf_of(session))
    assert response.status_code in (200, 202), response.json()
    assert response.json()["success"] is True
    assert state(tunnel, initial) != initial


def test_a_session_may_still_read_client_status_with_get(staff, session):
    tunnel = tunnel_for(staff, {})
    response = session.get(f"{BASE}client_status", {"tunnel": tunnel.hash})
    assert response.status_code == 200
    assert response.json()["error_code"] == 24


@pytest.mark.parametrize(("name", "params", "initial"), ACTING)
def test_a_token_get_still_acts(owner, name, params, initial):
    tunnel = tunnel_for(owner, initial)
    response = client_for(owner).get(f"{BASE}{name}", {"tunnel": tunnel.hash, **params})
    assert response.status_code in (200, 202), response.json()
    assert state(tunnel, initial) != initial


def test_a_legacy_key_get_still_acts(settings, staff):
    settings.API_KEYS = ["legacy-key-1"]
    settings.API_KEY_USER = staff.username
    tunnel = tunnel_for(staff, {"desired_state": Desired.RUNNING})
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION="Bearer legacy-key-1")
    response = client.get(f"{BASE}disconnect", {"tunnel": tunnel.hash, "wait": "0"})
    assert response.status_code in (200, 202), response.json()
    assert state(tunnel, {"desired_state": 0}) == {"desired_state": Desired.STOPPED}


def test_an_access_key_get_still_acts(owner):
    tunnel = tunnel_for(owner, {"desired_state": Desired.RUNNING})
    row, secret = keys.create(owner, label="laptop")
    response = send(sign("GET", f"{BASE}disconnect?tunnel={tunnel.hash}&wait=0", row.id, secret))
    assert response.status_code in (200, 202), response.json()
    assert state(tunnel, {"desired_state": 0}) == {"desired_state": Desired.STOPPED}
