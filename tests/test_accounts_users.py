"""/api/v1/users/ (staff) and /api/v1/users/me/; quotas edited here are enforced by the service layer."""

from __future__ import annotations

import pytest

from accounts import tokens
from tests.conftest import client_for
from tests.factories import make_tunnel, tunnel_data
from tunnels import services
from tunnels.models import Tunnel

pytestmark = pytest.mark.django_db
URL = "/api/v1/users/"
ME = "/api/v1/users/me/"


def test_me_shows_profile_quotas_usage_and_scopes(owner, owner_client, settings):
    settings.DEFAULT_MAX_TUNNELS = 7
    make_tunnel(owner)
    body = owner_client.get(ME).json()
    assert body["username"] == "alice"
    assert body["quotas"] == {
        "max_tunnels": 7,
        "local_port_min": 20000,  # the server-wide pool (TUNNELSITE_PORT_RANGE)
        "local_port_max": 29999,
        "allow_nonloopback_bind": False,
    }
    assert body["usage"] == {"tunnels": 1, "tokens": 1, "access_keys": 0}
    assert body["scopes"] == ["operate", "read", "write"]


def test_me_needs_authentication():
    from rest_framework.test import APIClient

    assert APIClient().get(ME).status_code == 401


def test_non_staff_cannot_use_the_users_api(owner_client):
    response = owner_client.get(URL)
    assert response.status_code == 403
    assert "admin" in response.json()["error"]
    assert owner_client.post(URL, {"username": "x", "password": "p"}, format="json").status_code == 403


def test_staff_token_without_admin_scope_is_refused(staff):
    response = client_for(staff, ["read", "write"]).get(URL)
    assert response.status_code == 403
    assert "'admin'" in response.json()["error"]


def test_staff_lists_users_with_tunnel_counts(owner, other, staff_client, django_assert_num_queries):
    make_tunnel(owner)
    make_tunnel(owner)
    staff_client.get(ME)
    with django_assert_num_queries(3):
        rows = staff_client.get(URL).json()
    counts = {row["username"]: row["tunnel_count"] for row in rows}
    assert counts == {"alice": 2, "bob": 0, "carol": 0}
    assert all("password" not in row for row in rows)


def test_staff_creates_a_user_who_can_then_log_in(staff_client, django_user_model):
    response = staff_client.post(
        URL, {"username": "dave", "password": "a-long-enough-pass-9", "max_tunnels": 3}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["effective_max_tunnels"] == 3
    dave = django_user_model.objects.get(username="dave")
    assert dave.check_password("a-long-enough-pass-9")


def test_create_without_password_is_400(staff_client):
    response = staff_client.post(URL, {"username": "dave"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["fields"]


def test_weak_password_is_400(staff_client):
    assert staff_client.post(URL, {"username": "dave", "password": "123"}, format="json").status_code == 400


def test_invalid_port_range_is_400_and_nothing_changes(owner, staff_client):
    response = staff_client.patch(f"{URL}alice/", {"local_port_min": 9000, "local_port_max": 8000}, format="json")
    assert response.status_code == 400
    owner.refresh_from_db()
    assert (owner.local_port_min, owner.local_port_max) == (None, None)


def test_deactivate_keeps_the_row_and_blocks_the_users_tokens(owner, staff_client):
    _, raw = tokens.mint(owner)
    assert staff_client.delete(f"{URL}alice/").status_code == 204
    owner.refresh_from_db()
    assert owner.is_active is False
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(ME).status_code == 401


def test_staff_cannot_deactivate_themselves(staff, staff_client):
    response = staff_client.delete(f"{URL}carol/")
    assert response.status_code == 400
    assert response.json() == {"error": "you cannot deactivate your own account"}
    staff.refresh_from_db()
    assert staff.is_active


LOCKOUTS = [
    ({"is_active": False}, "is_active", "deactivate"),
    ({"is_active": "false"}, "is_active", "deactivate"),
    ({"is_staff": False}, "is_staff", "staff"),
]


@pytest.mark.parametrize("change, field, words", LOCKOUTS)
def test_staff_cannot_deactivate_or_demote_themselves_with_patch(staff, staff_client, change, field, words):
    response = staff_client.patch(f"{URL}carol/", {**change, "first_name": "Carol"}, format="json")
    assert response.status_code == 400
    assert words in response.json()["fields"][field][0]
    staff.refresh_from_db()
    assert (staff.is_active, staff.is_staff, staff.first_name) == (True, True, "")


@pytest.mark.parametrize("change, field, words", LOCKOUTS)
def test_staff_cannot_deactivate_or_demote_themselves_with_put(staff, staff_client, change, field, words):
    body = {"username": "carol", "is_active": True, "is_staff": True, "first_name": "Carol", **change}
    response = staff_client.put(f"{URL}carol/", body, format="json")
    assert response.status_code == 400
    assert words in response.json()["fields"][field][0]
    staff.refresh_from_db()
    assert (staff.is_active, staff.is_staff, staff.first_name) == (True, True, "")


def test_both_lockouts_at_once_name_both_fields(staff, staff_client):
    response = staff_client.patch(f"{URL}carol/", {"is_active": False, "is_staff": False}, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"is_active", "is_staff"}


def test_staff_may_still_edit_their_own_account(staff, staff_client):
    body = {"is_active": True, "is_staff": True, "first_name": "Carol"}
    assert staff_client.patch(f"{URL}carol/", body, format="json").status_code == 200
    staff.refresh_from_db()
    assert (staff.is_active, staff.is_staff, staff.first_name) == (True, True, "Carol")


def test_staff_may_deactivate_and_demote_someone_else(owner, django_user_model, staff_client):
    django_user_model.objects.filter(pk=owner.pk).update(is_staff=True)
    response = staff_client.patch(f"{URL}alice/", {"is_active": False, "is_staff": False}, format="json")
    assert response.status_code == 200
    owner.refresh_from_db()
    assert (owner.is_active, owner.is_staff) == (False, False)


def test_unknown_user_is_404(staff_client):
    assert staff_client.get(f"{URL}nobody/").status_code == 404


# --- quotas set through the users API, enforced by the service layer ------


def test_n_plus_first_tunnel_is_refused(owner, staff_client):
    assert staff_client.patch(f"{URL}alice/", {"max_tunnels": 2}, format="json").status_code == 200
    owner.refresh_from_db()
    make_tunnel(owner)
    make_tunnel(owner)
    with pytest.raises(services.QuotaExceeded, match="at most 2 tunnels"):
        make_tunnel(owner)
    assert Tunnel.objects.owned_by(owner).count() == 2


def test_port_outside_the_range_is_refused(owner, staff_client):
    staff_client.patch(f"{URL}alice/", {"local_port_min": 20000, "local_port_max": 20999}, format="json")
    owner.refresh_from_db()
    with pytest.raises(services.QuotaExceeded, match="outside your allowed range 20000-20999"):
        services.create_tunnel(owner, tunnel_data(local_port="30000"))
    assert not Tunnel.objects.exists()


def test_non_loopback_bind_is_refused_until_staff_allows_it(owner, staff_client):
    with pytest.raises(services.QuotaExceeded, match="loopback"):
        services.create_tunnel(owner, tunnel_data(local_port="0.0.0.0:20100"))
    assert not Tunnel.objects.exists()
    staff_client.patch(f"{URL}alice/", {"allow_nonloopback_bind": True}, format="json")
    owner.refresh_from_db()
    services.create_tunnel(owner, tunnel_data(local_port="0.0.0.0:20100"))
    assert Tunnel.objects.owned_by(owner).count() == 1


def test_staff_are_exempt_from_quotas(staff):
    staff.max_tunnels = 0
    staff.save()
    services.create_tunnel(staff, tunnel_data(local_port="0.0.0.0:80"))
    assert Tunnel.objects.owned_by(staff).count() == 1


def test_a_port_range_is_both_ends_or_neither(owner, staff_client):
    response = staff_client.patch(f"{URL}alice/", {"local_port_min": 9000}, format="json")
    assert response.status_code == 400
    assert "neither" in response.json()["fields"]["local_port_min"][0]
    owner.refresh_from_db()
    assert (owner.local_port_min, owner.local_port_max) == (None, None)
