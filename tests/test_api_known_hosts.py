"""REST API v1 /api/v1/known-hosts/: list, read, pre-seed, accept, delete; other users' rows are 404."""

from __future__ import annotations

import pytest

from tests.conftest import client_for
from tests.test_hostkeys import KEY, KEY_TYPE, OTHER, OTHER_TYPE, failed_tunnel, new_key, pin
from tunnels import services, sshkeys
from tunnels.models import HostKeyState, KnownHost

pytestmark = pytest.mark.django_db

URL = "/api/v1/known-hosts/"
OFFERED_FP = sshkeys.fingerprint(f"{OTHER_TYPE} {OTHER}")
FIELDS = {
    "id",
    "owner",
    "host",
    "port",
    "key_type",
    "key",
    "fingerprint",
    "state",
    "offered_key",
    "offered_fingerprint",
    "source",
    "first_seen",
    "last_seen",
    "changed_at",
}


def changed(owner, host="example.org", offered_key=OTHER) -> KnownHost:
    return pin(owner, host, state=HostKeyState.CHANGED, offered_key=offered_key, offered_fingerprint=OFFERED_FP)


# --- reading ---------------------------------------------------------------------


def test_owner_lists_and_reads_their_known_hosts(owner, other, owner_client):
    row = pin(owner, "127.0.0.1", 2222)
    pin(other, "other.example")
    body = owner_client.get(URL).json()
    assert body["total"] == 1
    (entry,) = body["entries"]
    assert set(entry) == FIELDS
    assert (entry["id"], entry["host"], entry["port"], entry["key"], entry["owner"]) == (
        str(row.id),
        "127.0.0.1",
        2222,
        KEY,
        "alice",
    )
    assert (entry["state"], entry["source"], entry["fingerprint"]) == ("trusted", "tofu", row.fingerprint)
    assert owner_client.get(f"{URL}{row.id}/").json() == entry


def test_list_filters_by_host_and_state(owner, owner_client):
    pin(owner, "a.example")
    changed(owner, "b.example")
    assert [e["host"] for e in owner_client.get(URL, {"host": "A.example"}).json()["entries"]] == ["a.example"]
    assert [e["host"] for e in owner_client.get(URL, {"state": "changed"}).json()["entries"]] == ["b.example"]


@pytest.mark.parametrize("params,name", [({"state": "weird"}, "state"), ({"host": "-oX"}, "host")])
def test_bad_filters_are_400_naming_the_parameter(owner_client, params, name):
    response = owner_client.get(URL, params)
    assert response.status_code == 400
    assert name in response.json()["fields"]


def test_other_users_rows_are_404_for_every_action(owner, other_client):
    row = changed(owner)
    assert other_client.get(URL).json()["total"] == 0
    assert other_client.get(f"{URL}{row.id}/").status_code == 404
    assert other_client.post(f"{URL}{row.id}/accept/").status_code == 404
    assert other_client.delete(f"{URL}{row.id}/").status_code == 404
    row.refresh_from_db()
    assert row.state == HostKeyState.CHANGED


def test_a_malformed_id_is_a_json_404(owner_client):
    response = owner_client.get(f"{URL}not-a-uuid/")
    assert response.status_code == 404
    assert "error" in response.json()


def test_staff_with_admin_scope_sees_everyone_and_without_it_only_their_own(owner, staff, staff_client):
    row = pin(owner)
    assert staff_client.get(f"{URL}{row.id}/").status_code == 200
    assert staff_client.get(URL, {"owner": "alice"}).json()["total"] == 1
    assert client_for(staff, ["read", "write"]).get(f"{URL}{row.id}/").status_code == 404


@pytest.mark.parametrize("count", [1, 40])
def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    for index in range(count):
        pin(owner, f"h{index}.example")
    owner_client.get(URL)
    # token lookup, count, page (owners joined), request-history insert
    with django_assert_num_queries(4):
        assert owner_client.get(URL, {"limit": 500}).json()["total"] == count


# --- pre-seeding -------------------------------------------------------------------


def test_keyscan_output_is_pinned_and_returned(owner, owner_client):
    text = f"[127.0.0.1]:2222 {KEY_TYPE} {KEY}\nexample.org {OTHER_TYPE} {OTHER}\n"
    response = owner_client.post(URL, {"line": text}, format="json")
    assert response.status_code == 201
    body = response.json()["entries"]
    assert response.json()["total"] == 2
    assert [(e["host"], e["port"], e["source"], e["state"]) for e in body] == [
        ("127.0.0.1", 2222, "keyscan", "trusted"),
        ("example.org", 22, "keyscan", "trusted"),
    ]
    assert set(KnownHost.objects.filter(owner=owner).values_list("id", flat=True)) == {
        KnownHost.objects.get(host=e["host"]).id for e in body
    }


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"line": ""},
        {"line": 5},
        {"line": "example.org ssh-ed25519"},
        {"line": f"example.org ssh-rsa {KEY}"},
        {"line": f"example.org {KEY_TYPE} {KEY[:-4]}"},
        {"line": f"*.example.org {KEY_TYPE} {KEY}"},
        [f"example.org {KEY_TYPE} {KEY}"],
    ],
)
def test_bad_pastes_are_400_and_change_nothing(owner_client, body):
    response = owner_client.post(URL, body, format="json")
    assert response.status_code == 400
    assert "line" in response.json()["error"]
    assert not KnownHost.objects.exists()


def test_a_server_key_already_known_is_409(owner, owner_client):
    pin(owner)
    response = owner_client.post(URL, {"line": f"example.org {KEY_TYPE} {new_key()[1]}"}, format="json")
    assert response.status_code == 409
    assert "already known" in response.json()["error"]


def test_pre_seeding_needs_the_write_scope(owner):
    response = client_for(owner, ["read"]).post(URL, {"line": f"example.org {KEY_TYPE} {KEY}"}, format="json")
    assert response.status_code == 403
    assert not KnownHost.objects.exists()


# --- accept, delete -----------------------------------------------------------------


def test_accept_trusts_the_offered_key_and_retries_the_tunnels(owner, owner_client):
    row = changed(owner)
    tunnel = failed_tunnel(owner)
    marker = services.marker_value()
    response = owner_client.post(f"{URL}{row.id}/accept/")
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["key"], body["fingerprint"], body["offered_fingerprint"]) == (
        "trusted",
        OTHER,
        OFFERED_FP,
        "",
    )
    assert body["changed_at"]
    tunnel.refresh_from_db()
    assert (tunnel.consecutive_failures, tunnel.backoff_until) == (0, None)
    assert services.marker_value() > marker


def test_accept_without_a_fetched_key_is_409(owner, owner_client):
    row = changed(owner, offered_key="")
    response = owner_client.post(f"{URL}{row.id}/accept/")
    assert response.status_code == 409
    assert "fetch failed; delete the entry to trust on next use instead" in response.json()["error"]
    row.refresh_from_db()
    assert (row.state, row.key) == (HostKeyState.CHANGED, KEY)


def test_accept_of_a_trusted_key_is_409(owner, owner_client):
    assert owner_client.post(f"{URL}{pin(owner).id}/accept/").status_code == 409


def test_accept_needs_the_write_scope(owner):
    row = changed(owner)
    assert client_for(owner, ["read", "operate"]).post(f"{URL}{row.id}/accept/").status_code == 403
    row.refresh_from_db()
    assert row.state == HostKeyState.CHANGED


def test_delete_forgets_the_key(owner, owner_client):
    row = changed(owner)
    tunnel = failed_tunnel(owner)
    assert owner_client.delete(f"{URL}{row.id}/").status_code == 204
    assert not KnownHost.objects.exists()
    tunnel.refresh_from_db()
    assert tunnel.consecutive_failures == 0


def test_updates_are_not_allowed(owner, owner_client):
    row = pin(owner)
    assert owner_client.patch(f"{URL}{row.id}/", {"key": OTHER}, format="json").status_code == 405
    row.refresh_from_db()
    assert row.key == KEY
