"""REST API v1: sshreach-style calls under /api/v1/calls/<call> (envelope and error codes)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import client_for
from tests.factories import make_tunnel
from tunnels import services
from tunnels.models import Desired, Status, Tunnel

pytestmark = pytest.mark.django_db

BASE = "/api/v1/calls/"


def call(client, name: str, method: str = "get", **params):
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return getattr(client, method)(f"{BASE}{name}?{query}")


def envelope(response) -> tuple[int, bool, str]:
    body = response.json()
    assert set(body) >= {"message", "error_code", "success"}, body
    return body["error_code"], body["success"], body["message"]


@pytest.fixture
def tunnel(owner):
    return services.create_tunnel(
        owner, {"remote_host": "u@h", "remote_port": "80", "local_port": "23456"}, start=False
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_connect_by_hash_prefix_without_worker_is_not_connected(owner_client, tunnel, method):
    response = call(owner_client, "connect", method, tunnel=tunnel.hash[:8], wait="0.1")
    assert response.status_code == 409
    code, success, message = envelope(response)
    assert (code, success) == (11, False)
    assert message == "not connected: queued: no worker is running"
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING


def test_connect_wait_0_is_202_queued(owner_client, tunnel):
    response = call(owner_client, "connect", tunnel=str(tunnel.uuid), wait=0)
    assert response.status_code == 202
    assert envelope(response)[:2] == (0, True)


def test_connect_reports_ok_when_running(owner_client, tunnel):
    # What the worker would have written: running at the current generation.
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING, running_generation=tunnel.generation, pid=5)
    response = call(owner_client, "connect", tunnel=tunnel.hash)
    assert response.status_code == 200
    assert response.json() == {"message": "OK", "error_code": 0, "success": True}


def test_connect_interactive_is_11(owner, owner_client):
    tunnel = make_tunnel(owner, interactive=True)
    response = call(owner_client, "connect", tunnel=tunnel.hash)
    assert response.status_code == 409
    code, success, message = envelope(response)
    assert (code, success) == (11, False) and "interactive" in message
    assert f"/api/v1/tunnels/{tunnel.uuid}/prompt/" in message and f"/tunnels/{tunnel.uuid}/" in message
    assert Tunnel.objects.get(pk=tunnel.pk).desired_state == Desired.STOPPED


def test_disconnect_of_stopped_tunnel_is_ok(owner_client, tunnel):
    response = call(owner_client, "disconnect", "post", tunnel=tunnel.hash[:10])
    assert response.status_code == 200
    assert response.json() == {"message": "OK", "error_code": 0, "success": True}


def test_disconnect_not_confirmed_is_12(owner_client, tunnel):
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING)
    response = call(owner_client, "disconnect", tunnel=tunnel.hash, wait="0.1")
    assert response.status_code == 409
    assert envelope(response)[:2] == (12, False)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_client_status_online_and_offline(owner_client, tunnel):
    assert call(owner_client, "client_status", tunnel=tunnel.hash).json() == {
        "message": "offline",
        "error_code": 24,
        "success": True,
    }
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING)
    assert call(owner_client, "client_status", tunnel=tunnel.hash).json() == {
        "message": "online",
        "error_code": 0,
        "success": True,
    }


@pytest.mark.parametrize(("allow", "expected"), [("true", True), ("false", False)])
def test_set_allow_clientless_maps_to_auto_restart(owner_client, tunnel, allow, expected):
    Tunnel.objects.filter(pk=tunnel.pk).update(auto_restart=not expected)
    response = call(owner_client, "set_allow_clientless", "post", tunnel=tunnel.hash, allow=allow)
    assert response.status_code == 200
    assert response.json() == {"allow_clientless": expected, "message": "success", "error_code": 0, "success": True}
    tunnel.refresh_from_db()
    assert tunnel.auto_restart is expected


@pytest.mark.parametrize("allow", ["", "maybe"])
def test_set_allow_clientless_bad_allow_is_31(owner_client, tunnel, allow):
    response = call(owner_client, "set_allow_clientless", tunnel=tunnel.hash, allow=allow)
    assert response.status_code == 400
    assert envelope(response)[:2] == (31, False)


def test_unknown_call_is_21(owner_client):
    response = call(owner_client, "reboot_everything", tunnel="x")
    assert response.status_code == 404
    assert envelope(response)[:2] == (21, False)


def test_wrong_method_is_21(owner_client, tunnel):
    response = owner_client.delete(f"{BASE}connect?tunnel={tunnel.hash}")
    assert response.status_code == 405
    assert envelope(response)[:2] == (21, False)


@pytest.mark.parametrize(
    ("param", "status"),
    [(None, 400), ("abc", 400), ("0000000000", 404), ("00000000-0000-0000-0000-000000000000", 404), ("zz-z", 404)],
)
def test_bad_or_missing_tunnel_is_31(owner_client, param, status):
    params = {} if param is None else {"tunnel": param}
    response = call(owner_client, "client_status", **params)
    assert response.status_code == status
    assert envelope(response)[:2] == (31, False)


def test_ambiguous_prefix_is_31_with_400(owner, owner_client):
    first = make_tunnel(owner)
    clash = make_tunnel(owner)
    Tunnel.objects.filter(pk=clash.pk).update(hash=first.hash[:8] + "f" * 24)
    response = call(owner_client, "client_status", tunnel=first.hash[:8])
    assert response.status_code == 400
    assert "Ambiguous" in envelope(response)[2]


def test_other_users_tunnel_is_31_not_found(other_client, tunnel):
    response = call(other_client, "connect", tunnel=tunnel.hash)
    assert response.status_code == 404
    assert envelope(response)[:2] == (31, False)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED
    assert call(other_client, "client_status", tunnel=str(tunnel.uuid)).status_code == 404


def test_no_credentials_is_23(tunnel):
    response = call(APIClient(), "client_status", tunnel=tunnel.hash)
    assert response.status_code == 401
    assert envelope(response)[:2] == (23, False)


def test_deactivated_user_is_23(owner, tunnel):
    client = client_for(owner)
    owner.is_active = False
    owner.save()
    response = call(client, "connect", tunnel=tunnel.hash)
    assert response.status_code == 401
    assert envelope(response)[:2] == (23, False)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_read_token_cannot_connect_but_can_ask_status(owner, tunnel):
    client = client_for(owner, ["read"])
    response = call(client, "connect", tunnel=tunnel.hash)
    assert response.status_code == 403
    assert envelope(response)[:2] == (23, False)
    assert call(client, "client_status", tunnel=tunnel.hash).status_code == 200
    assert call(client, "set_allow_clientless", tunnel=tunnel.hash, allow="true").status_code == 403


def test_throttled_is_22(settings, owner_client, tunnel):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/minute"},
    }
    codes = [call(owner_client, "client_status", tunnel=tunnel.hash) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert envelope(codes[-1])[:2] == (22, False)


def test_staff_admin_reaches_other_users_tunnel(staff_client, tunnel):
    response = call(staff_client, "disconnect", tunnel=str(tunnel.uuid))
    assert envelope(response)[:2] == (0, True)


@pytest.mark.parametrize("call_name", ["connect", "disconnect"])
def test_bad_wait_is_31_and_changes_nothing(owner_client, tunnel, call_name):
    before = Tunnel.objects.values("desired_state", "desired_changed_at").get(pk=tunnel.pk)
    response = call(owner_client, call_name, tunnel=tunnel.hash[:8], wait="abc")
    assert response.status_code == 400 and envelope(response)[:2] == (31, False)
    assert Tunnel.objects.values("desired_state", "desired_changed_at").get(pk=tunnel.pk) == before


def test_wait_in_a_form_body_is_read_like_tunnel(owner_client, tunnel):
    response = owner_client.post(f"{BASE}connect", {"tunnel": tunnel.hash[:8], "wait": "0"})
    assert response.status_code == 202 and envelope(response)[:2] == (0, True)


def test_head_is_405_and_changes_nothing(owner_client, tunnel):
    response = owner_client.head(f"{BASE}connect?tunnel={tunnel.hash[:8]}&wait=0")
    assert response.status_code == 405
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_no_call_named_is_21(owner_client):
    response = owner_client.get(BASE)
    assert response.status_code == 404 and envelope(response)[:2] == (21, False)
