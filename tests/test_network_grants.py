"""Network grants of a user (allowed_targets, allow_nonloopback_target, ssh_destinations): staff edit
them in the users API and the admin, line by line validated; users read their own in /users/me/."""

from __future__ import annotations

import pytest

from tests.factories import tunnel_data
from tunnels.models import Tunnel

pytestmark = [pytest.mark.django_db, pytest.mark.real_network_policy]
USERS = "/api/v1/users/"
ME = "/api/v1/users/me/"
TUNNELS = "/api/v1/tunnels/"


def test_staff_grant_a_target_and_the_user_may_then_use_it(owner, owner_client, staff_client):
    reverse = tunnel_data(direction="local_to_remote", local_port="127.0.0.1:5432")
    assert owner_client.post(TUNNELS, reverse, format="json").status_code == 403

    grants = {"allowed_targets": "127.0.0.1:5432\n# the reporting database\n", "ssh_destinations": "[::1]:22"}
    response = staff_client.patch(f"{USERS}alice/", {**grants, "allow_nonloopback_target": True}, format="json")
    assert response.status_code == 200, response.content
    assert {name: response.json()[name] for name in grants} == {name: text.strip() for name, text in grants.items()}
    assert response.json()["allow_nonloopback_target"] is True

    assert owner_client.post(TUNNELS, reverse, format="json").status_code == 201


@pytest.mark.parametrize(
    ("field", "text", "problems"),
    [
        ("allowed_targets", "127.0.0.1:5432\n10.0.0.0/8\nlocalhost:80", ["line 2: ", "line 3: "]),
        ("allowed_targets", "[::1:5432", ["line 1: "]),
        ("ssh_destinations", "10.0.0.0/8\n10.0.0.0/33\n127.0.0.1:0", ["line 2: ", "line 3: "]),
    ],
)
def test_every_bad_line_is_a_400_that_changes_nothing(owner, staff_client, field, text, problems):
    response = staff_client.patch(f"{USERS}alice/", {field: text, "allow_nonloopback_target": True}, format="json")
    assert response.status_code == 400
    messages = response.json()["fields"][field]
    assert [message[: len(prefix)] for message, prefix in zip(messages, problems, strict=True)] == problems
    owner.refresh_from_db()
    assert (getattr(owner, field), owner.allow_nonloopback_target) == ("", False)


def test_a_destination_rule_needs_no_port_but_a_target_rule_does(owner, staff_client):
    assert staff_client.patch(f"{USERS}alice/", {"ssh_destinations": "127.0.0.0/8"}, format="json").status_code == 200
    response = staff_client.patch(f"{USERS}alice/", {"allowed_targets": "127.0.0.0/8"}, format="json")
    assert response.status_code == 400 and "a port is required" in response.json()["fields"]["allowed_targets"][0]


def test_users_cannot_grant_themselves(owner, owner_client):
    assert owner_client.patch(f"{USERS}alice/", {"allowed_targets": "127.0.0.1:5432"}, format="json").status_code == 403
    assert owner_client.patch(ME, {"allowed_targets": "127.0.0.1:5432"}, format="json").status_code == 405
    owner.refresh_from_db()
    assert owner.allowed_targets == ""


def test_me_shows_the_users_own_grants(owner, owner_client, staff, staff_client):
    owner.allowed_targets = "127.0.0.1:5432\n\n# comment\n[::1]:6000-6010"
    owner.ssh_destinations = "10.0.0.0/8"
    owner.save()
    assert owner_client.get(ME).json()["network"] == {
        "allow_nonloopback_target": False,
        "allowed_targets": ["127.0.0.1:5432", "[::1]:6000-6010"],
        "ssh_destinations": ["10.0.0.0/8"],
        "policy_exempt": False,
    }
    assert staff_client.get(ME).json()["network"]["policy_exempt"] is True


# --- the admin -------------------------------------------------------------------------


@pytest.fixture
def admin_client_(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")
    client.force_login(user)
    return client


def change_form(owner, **fields) -> dict:
    data = {
        "username": owner.username,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "is_active": "on",
        "allowed_targets": "",
        "ssh_destinations": "",
    }
    data.update(fields)
    return data


def test_the_admin_shows_and_edits_the_grants(admin_client_, owner):
    url = f"/admin/accounts/user/{owner.pk}/change/"
    page = admin_client_.get(url).content.decode()
    for field in ("allowed_targets", "ssh_destinations", "allow_nonloopback_target"):
        assert f'name="{field}"' in page

    data = change_form(owner, allowed_targets="127.0.0.1:5432", ssh_destinations="127.0.0.0/8")
    data["allow_nonloopback_target"] = "on"
    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.content.decode()[-3000:]
    owner.refresh_from_db()
    assert (owner.allowed_targets, owner.ssh_destinations, owner.allow_nonloopback_target) == (
        "127.0.0.1:5432",
        "127.0.0.0/8",
        True,
    )


def test_the_admin_names_each_bad_line_and_saves_nothing(admin_client_, owner):
    url = f"/admin/accounts/user/{owner.pk}/change/"
    response = admin_client_.post(url, change_form(owner, allowed_targets="127.0.0.1:5432\nnope:1"))
    assert response.status_code == 200
    assert "line 2: &#x27;nope&#x27; is not an IP address or CIDR" in response.content.decode()
    owner.refresh_from_db()
    assert owner.allowed_targets == ""
    assert not Tunnel.objects.exists()
