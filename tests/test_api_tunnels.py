"""REST API v1: /api/v1/tunnels/ CRUD, filters, pagination, actions, logs, sessions."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from tests.conftest import client_for
from tests.factories import make_tunnel, tunnel_data
from tunnels import services
from tunnels.models import ConfigBackup, Desired, Status, Tunnel, TunnelSession

pytestmark = pytest.mark.django_db

URL = "/api/v1/tunnels/"


def url(tunnel, suffix: str = "") -> str:
    return f"{URL}{tunnel.uuid}/{suffix}"


def bulk_tunnels(owner, count: int, **extra) -> None:
    """Many rows fast (listing is under test here, not creation)."""
    rows = []
    for index in range(count):
        tunnel = Tunnel(
            owner=owner,
            name=f"bulk{index}",
            remote_host="u@h",
            remote_port="80",
            local_port=str(30000 + index),
            **extra,
        )
        tunnel.hash = tunnel.compute_hash()
        rows.append(tunnel)
    Tunnel.objects.bulk_create(rows)


def stopped_tunnel(owner):
    return services.create_tunnel(owner, tunnel_data(), start=False)


# --- create ---------------------------------------------------------------


def test_create_returns_201_with_the_item_shape(owner_client):
    response = owner_client.post(URL, tunnel_data(name="web", local_port="28080", ssh_port=2222), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    tunnel = Tunnel.objects.get()
    assert body["id"] == str(tunnel.uuid)
    assert body["owner"] == "alice"
    assert body["name"] == "web"
    assert body["local_port"] == "28080"
    assert body["ssh_port"] == 2222
    assert body["listen"] == "127.0.0.1:28080"
    assert body["hash"] == tunnel.hash and len(body["hash"]) == 32
    assert body["desired_state"] == "running"  # a new non-interactive tunnel is meant to run
    assert body["status"] == "stopped"
    assert body["connected_since"] is None
    assert set(body) >= {"pid", "last_error", "restart_count", "node", "created_at", "updated_at", "auto_restart"}


def test_create_with_desired_state_stopped_does_not_start(owner_client):
    response = owner_client.post(URL, tunnel_data(desired_state="stopped"), format="json")
    assert response.status_code == 201
    assert Tunnel.objects.get().desired_state == Desired.STOPPED


def test_create_with_bad_desired_state_is_400(owner_client):
    response = owner_client.post(URL, tunnel_data(desired_state="flying"), format="json")
    assert response.status_code == 400
    assert "desired_state" in response.json()["fields"]
    assert not Tunnel.objects.exists()


def test_create_missing_fields_is_400_naming_them(owner_client):
    response = owner_client.post(URL, {"name": "x"}, format="json")
    assert response.status_code == 400
    body = response.json()
    # local_port may be left out here (a free port is assigned); the compat API requires it.
    assert body["error"] == "Missing required fields: remote_host, remote_port"
    assert set(body["fields"]) == {"remote_host", "remote_port"}


def test_create_rejects_option_injection_with_field_errors(owner_client):
    response = owner_client.post(URL, tunnel_data(remote_host="-oProxyCommand=sh"), format="json")
    assert response.status_code == 400
    assert "remote_host" in response.json()["fields"]
    assert not Tunnel.objects.exists()


def test_create_non_object_body_is_400(owner_client):
    response = owner_client.post(URL, ["not", "an", "object"], format="json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_create_garbage_json_is_400(owner_client):
    response = owner_client.generic("POST", URL, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()


def test_create_with_a_text_body_is_415_and_creates_nothing(owner_client):
    response = owner_client.generic("POST", URL, "name=x", content_type="text/plain")
    assert response.status_code == 415
    assert "text/plain" in response.json()["error"]
    assert not Tunnel.objects.exists()


def test_create_nested_too_deeply_is_400(owner_client):
    response = owner_client.generic("POST", URL, "[" * 5000 + "]" * 5000, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded"])
def test_create_with_a_body_over_the_limit_is_400_json(settings, owner_client, content_type):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = '{"name": "' + "x" * 2000 + '"}' if content_type == "application/json" else "name=" + "x" * 2000
    response = owner_client.generic("POST", URL, body, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == {"error": "Request body too large (limit 1024 bytes)"}
    assert not Tunnel.objects.exists()


def test_create_with_too_many_form_fields_is_400_json(owner_client):
    body = "&".join(f"f{i}=1" for i in range(2000))
    response = owner_client.generic("POST", URL, body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "too many fields" in response.json()["error"]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_without_the_trailing_slash_is_redirected_keeping_its_method(owner, owner_client, method):
    path = URL.rstrip("/") if method == "post" else url(make_tunnel(owner)).rstrip("/")
    response = getattr(owner_client, method)(path, {"name": "x"}, format="json")
    assert response.status_code == 308 and response["Location"] == path + "/"


def test_a_read_without_the_trailing_slash_is_still_a_301(owner_client):
    response = owner_client.get(URL.rstrip("/"))
    assert response.status_code == 301 and response["Location"] == URL


def test_create_duplicate_is_409(owner_client):
    data = tunnel_data()
    assert owner_client.post(URL, data, format="json").status_code == 201
    response = owner_client.post(URL, data, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["error"]


def test_create_outside_port_quota_is_403(owner, owner_client):
    owner.local_port_min, owner.local_port_max = 1024, 20000
    owner.save()
    response = owner_client.post(URL, tunnel_data(local_port="30000"), format="json")
    assert response.status_code == 403
    assert "outside your allowed range" in response.json()["error"]


def test_owner_field_is_read_only_on_create(owner_client, other):
    response = owner_client.post(URL, tunnel_data(owner="bob"), format="json")
    assert response.status_code == 201
    assert Tunnel.objects.get().owner.username == "alice"


def test_create_takes_a_backup_first(owner_client, owner):
    owner_client.post(URL, tunnel_data(), format="json")
    assert ConfigBackup.objects.filter(owner=owner, reason="before create").count() == 1


def test_unauthenticated_is_401():
    from rest_framework.test import APIClient

    response = APIClient().get(URL)
    assert response.status_code == 401
    assert "error" in response.json()


# --- read / isolation -------------------------------------------------------


def test_retrieve_by_uuid(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.get(url(tunnel))
    assert response.status_code == 200
    assert response.json()["id"] == str(tunnel.uuid)


def test_integer_pk_is_not_a_url(owner, owner_client):
    tunnel = make_tunnel(owner)
    assert owner_client.get(f"{URL}{tunnel.pk}/").status_code == 404


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("put", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "start/"),
        ("post", "stop/"),
        ("post", "restart/"),
        ("get", "logs/"),
        ("get", "sessions/"),
    ],
)
def test_other_users_tunnel_is_404_everywhere(owner, other_client, method, suffix):
    tunnel = make_tunnel(owner)
    response = getattr(other_client, method)(url(tunnel, suffix), tunnel_data(), format="json")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING  # nothing changed


def test_list_shows_only_own_tunnels(owner, other, owner_client):
    make_tunnel(owner, name="mine")
    make_tunnel(other, name="theirs")
    body = owner_client.get(URL).json()
    assert body["total"] == 1
    assert [item["name"] for item in body["entries"]] == ["mine"]


def test_staff_with_admin_scope_sees_all_and_filters_by_owner(owner, other, staff_client):
    make_tunnel(owner, name="a")
    make_tunnel(other, name="b")
    assert staff_client.get(URL).json()["total"] == 2
    body = staff_client.get(URL, {"owner": "bob"}).json()
    assert [item["owner"] for item in body["entries"]] == ["bob"]


def test_staff_can_manage_another_users_tunnel(owner, staff_client):
    tunnel = make_tunnel(owner)
    response = staff_client.post(url(tunnel, "stop/") + "?wait=0")
    assert response.status_code == 200
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED
    assert tunnel.desired_by.username == "carol"


def test_staff_without_admin_scope_sees_only_own(owner, staff):
    make_tunnel(owner)
    client = client_for(staff, ["read", "operate", "write"])
    assert client.get(URL).json()["total"] == 0


def test_owner_filter_is_ignored_for_non_staff(owner, other, owner_client):
    make_tunnel(owner)
    make_tunnel(other)
    assert owner_client.get(URL, {"owner": "bob"}).json()["total"] == 1


# --- update / delete --------------------------------------------------------


def test_patch_changes_fields_and_hash(owner, owner_client):
    tunnel = make_tunnel(owner, name="old")
    old_hash = tunnel.hash
    response = owner_client.patch(url(tunnel), {"name": "new", "auto_restart": False}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "new" and body["auto_restart"] is False
    assert body["hash"] != old_hash
    assert body["id"] == str(tunnel.uuid)  # the id survives edits, the hash does not


@pytest.mark.parametrize("body", [{}, {"name": "same"}])
def test_patch_that_changes_nothing_takes_no_backup(owner, owner_client, body):
    tunnel = make_tunnel(owner, name="same")
    backups = ConfigBackup.objects.count()
    response = owner_client.patch(url(tunnel), body, format="json")
    assert response.status_code == 200 and response.json()["name"] == "same"
    assert ConfigBackup.objects.count() == backups


def test_patch_bad_value_is_400_and_changes_nothing(owner, owner_client):
    tunnel = make_tunnel(owner, name="keep")
    response = owner_client.patch(url(tunnel), {"name": "changed", "local_port": "99999"}, format="json")
    assert response.status_code == 400
    assert "local_port" in response.json()["fields"]
    tunnel.refresh_from_db()
    assert tunnel.name == "keep"


def test_put_replaces_the_configuration(owner, owner_client):
    tunnel = make_tunnel(owner, name="old", interactive=False)
    data = {"remote_host": "u@other", "remote_port": "9090", "local_port": "21111"}
    response = owner_client.put(url(tunnel), data, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "unnamed"  # left out → default
    assert (body["remote_host"], body["remote_port"], body["local_port"]) == ("u@other", "9090", "21111")


def test_put_missing_fields_is_400(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.put(url(tunnel), {"name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Missing required fields:")


def test_update_to_duplicate_is_409(owner, owner_client):
    first = make_tunnel(owner)
    second = make_tunnel(owner)
    same = {k: getattr(first, k) for k in ("name", "remote_host", "remote_port", "local_port")}
    response = owner_client.patch(url(second), same, format="json")
    assert response.status_code == 409


def test_delete_is_204_and_keeps_history(owner, owner_client):
    tunnel = make_tunnel(owner)
    TunnelSession.objects.create(
        tunnel=tunnel,
        owner=owner,
        tunnel_uuid=tunnel.uuid,
        name=tunnel.name,
        hash=tunnel.hash,
        direction=tunnel.direction,
    )
    response = owner_client.delete(url(tunnel))
    assert response.status_code == 204
    assert not Tunnel.objects.exists()
    assert TunnelSession.objects.filter(tunnel_uuid=tunnel.uuid).exists()


def test_wrong_method_is_405_json(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.get(url(tunnel, "start/"))
    assert response.status_code == 405
    assert "error" in response.json()


# --- scopes -----------------------------------------------------------------


def test_read_token_can_list_but_not_start_or_create(owner):
    tunnel = make_tunnel(owner)
    client = client_for(owner, ["read"])
    assert client.get(URL).status_code == 200
    response = client.post(url(tunnel, "start/"))
    assert response.status_code == 403
    assert "'operate'" in response.json()["error"]
    assert client.post(URL, tunnel_data(), format="json").status_code == 403


def test_operate_token_can_start_but_not_edit_or_delete(owner):
    tunnel = stopped_tunnel(owner)
    client = client_for(owner, ["operate"])
    assert client.post(url(tunnel, "start/") + "?wait=0").status_code == 200
    assert client.patch(url(tunnel), {"name": "x"}, format="json").status_code == 403
    assert client.delete(url(tunnel)).status_code == 403
    assert Tunnel.objects.filter(pk=tunnel.pk).exists()


# --- list: filters, search, ordering, pagination ---------------------------


def test_pagination_limit_offset_total(owner, owner_client):
    bulk_tunnels(owner, 7)
    body = owner_client.get(URL, {"limit": 3, "offset": 5}).json()
    assert body["total"] == 7
    assert [item["name"] for item in body["entries"]] == ["bulk5", "bulk6"]


def test_filters_by_status_direction_desired_name(owner, owner_client):
    make_tunnel(owner, name="a")
    make_tunnel(owner, name="b", direction="local_to_remote")
    Tunnel.objects.filter(name="a").update(status=Status.RUNNING, desired_state=Desired.STOPPED)

    def names(**params):
        return sorted(item["name"] for item in owner_client.get(URL, params).json()["entries"])

    assert names(status="running") == ["a"]
    assert names(direction="local_to_remote") == ["b"]
    assert names(desired_state="running") == ["b"]
    assert names(name="b") == ["b"]


def test_bad_filter_value_is_400_naming_the_parameter(owner_client):
    response = owner_client.get(URL, {"status": "exploded"})
    assert response.status_code == 400
    assert "status" in response.json()["fields"]


def test_hash_prefix_filter(owner, owner_client):
    tunnel = make_tunnel(owner)
    make_tunnel(owner)
    body = owner_client.get(URL, {"hash": tunnel.hash[:8].upper()}).json()
    assert [item["id"] for item in body["entries"]] == [str(tunnel.uuid)]


@pytest.mark.parametrize("ordering", ["password", "owner__password", "-pid", "name,", "uuid"])
def test_unknown_ordering_is_400_naming_it(owner_client, ordering):
    response = owner_client.get(URL, {"ordering": ordering})
    assert response.status_code == 400 and "ordering" in response.json()["fields"]


@pytest.mark.parametrize(("param", "value"), [("limit", "abc"), ("limit", "0"), ("limit", "-1"), ("offset", "-5"),
                                              ("offset", "x"), ("limit", "\u00b2")])  # fmt: skip
def test_bad_limit_or_offset_is_400_naming_it(owner_client, param, value):
    response = owner_client.get(URL, {param: value})
    assert response.status_code == 400 and param in response.json()["fields"]


def test_limit_above_the_maximum_is_capped(owner, owner_client):
    bulk_tunnels(owner, 3)
    assert owner_client.get(URL, {"limit": "5000"}).json()["total"] == 3


def test_search_and_ordering(owner, owner_client):
    make_tunnel(owner, name="alpha-web", remote_host="u@alpha")
    make_tunnel(owner, name="beta-db")
    make_tunnel(owner, name="gamma-web")
    body = owner_client.get(URL, {"search": "web", "ordering": "-name"}).json()
    assert [item["name"] for item in body["entries"]] == ["gamma-web", "alpha-web"]


@pytest.mark.parametrize("count", [5, 500])
def test_list_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    bulk_tunnels(owner, count)
    owner_client.get(URL)  # the token's last_used write happens once; measure steady state
    # token lookup, count, page, request-history insert
    with django_assert_num_queries(4):
        response = owner_client.get(URL, {"limit": 1000})
    assert response.json()["total"] == count


def test_staff_list_query_count_is_constant(owner, other, staff_client, django_assert_num_queries):
    bulk_tunnels(owner, 50)
    bulk_tunnels(other, 50)
    staff_client.get(URL)
    with django_assert_num_queries(4):
        response = staff_client.get(URL, {"limit": 1000})
    assert {item["owner"] for item in response.json()["entries"]} == {"alice", "bob"}


# --- actions ----------------------------------------------------------------


def test_start_sets_desired_and_reports_queued_without_worker(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    assert tunnel.desired_state == Desired.STOPPED
    response = owner_client.post(url(tunnel, "start/") + "?wait=0")
    assert response.status_code == 200
    body = response.json()
    assert body["desired_state"] == "running"
    assert body["output"] == "queued: no worker is running"
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING
    assert tunnel.desired_by_token is not None


def test_stop_of_a_stopped_tunnel_says_stopped(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.post(url(tunnel, "stop/"))
    assert response.status_code == 200
    assert response.json()["output"] == "stopped"
    assert response.json()["desired_state"] == "stopped"


def test_restart_bumps_generation(owner, owner_client):
    tunnel = make_tunnel(owner)
    before = tunnel.generation
    response = owner_client.post(url(tunnel, "restart/") + "?wait=0")
    assert response.status_code == 200
    tunnel.refresh_from_db()
    assert tunnel.generation == before + 1


def test_start_interactive_is_accepted_and_prompts_are_answered_elsewhere(owner, owner_client):
    # Once 409; now a person answers its prompts at .../prompt/ (tests/test_api_prompt.py).
    tunnel = make_tunnel(owner, interactive=True)
    response = owner_client.post(url(tunnel, "start/") + "?wait=0")
    assert response.status_code == 200
    assert response.json()["desired_state"] == "running" and response.json()["prompt_pending"] is False


@pytest.mark.parametrize("action", ["start/", "stop/", "restart/"])
@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "1e9"])
def test_bad_wait_is_400_and_changes_nothing(owner, owner_client, action, wait):
    tunnel = make_tunnel(owner, desired_state="stopped") if action == "start/" else make_tunnel(owner)
    before = Tunnel.objects.values("desired_state", "desired_changed_at", "generation").get(pk=tunnel.pk)
    response = owner_client.post(url(tunnel, action) + f"?wait={wait}")
    assert response.status_code == 400
    assert "wait" in response.json()["fields"]
    assert Tunnel.objects.values("desired_state", "desired_changed_at", "generation").get(pk=tunnel.pk) == before


def test_connected_since_is_started_at_when_running(owner, owner_client):
    tunnel = make_tunnel(owner)
    started = timezone.now()
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING, started_at=started, pid=4242, node="n1")
    body = owner_client.get(url(tunnel)).json()
    assert body["connected_since"] is not None
    assert body["pid"] == 4242 and body["node"] == "n1"


# --- logs and sessions ------------------------------------------------------


def test_logs_tail_and_download(owner, owner_client):
    tunnel = make_tunnel(owner)
    tunnel.log_path.parent.mkdir(parents=True, exist_ok=True)
    tunnel.log_path.write_text("".join(f"line {i}\n" for i in range(300)))
    body = owner_client.get(url(tunnel, "logs/"), {"lines": 2}).json()
    assert body["log"] == "line 298\nline 299\n"
    assert body["lines"] == 2
    assert body["size"] == tunnel.log_path.stat().st_size
    assert owner_client.get(url(tunnel, "logs/")).json()["lines"] == 100

    download = owner_client.get(url(tunnel, "logs/"), {"download": "1"})
    assert download.status_code == 200
    assert download["Content-Type"].startswith("text/plain")
    assert b"".join(download.streaming_content).decode().count("\n") == 300


def test_logs_missing_file_is_404(owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.get(url(tunnel, "logs/"))
    assert response.status_code == 404
    assert response.json() == {"error": f"Log file not found for tunnel: {tunnel.uuid}"}


@pytest.mark.parametrize("lines", ["0", "x", "\u00b2", "\u0663"])
def test_logs_bad_lines_is_400(owner, owner_client, lines):
    tunnel = make_tunnel(owner)
    response = owner_client.get(url(tunnel, "logs/"), {"lines": lines})
    assert response.status_code == 400 and "lines" in response.json()["fields"]


def test_sessions_lists_that_tunnels_history_newest_first(owner, owner_client):
    tunnel = make_tunnel(owner)
    other_tunnel = make_tunnel(owner)
    now = timezone.now()
    for offset, t in ((60, tunnel), (30, tunnel), (10, other_tunnel)):
        TunnelSession.objects.create(
            tunnel=t,
            owner=owner,
            tunnel_uuid=t.uuid,
            name=t.name,
            hash=t.hash,
            direction=t.direction,
            started_at=now - timezone.timedelta(seconds=offset),
        )
    body = owner_client.get(url(tunnel, "sessions/")).json()
    assert body["total"] == 2
    stamps = [entry["registered_at"] for entry in body["entries"]]
    assert stamps == sorted(stamps, reverse=True)
    assert {entry["tunnel_id"] for entry in body["entries"]} == {str(tunnel.uuid)}


@pytest.mark.parametrize("count", [5, 50])
def test_sessions_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    tunnel = make_tunnel(owner)
    TunnelSession.objects.bulk_create(
        TunnelSession(tunnel=tunnel, owner=owner, tunnel_uuid=tunnel.uuid, name=tunnel.name, hash=tunnel.hash)
        for _ in range(count)
    )
    owner_client.get(url(tunnel, "sessions/"))
    # token lookup, the tunnel, count, page, request-history insert
    with django_assert_num_queries(5):
        assert owner_client.get(url(tunnel, "sessions/"), {"limit": 500}).json()["total"] == count


def test_hand_written_representation_matches_drf_fields(owner):
    """TunnelSerializer.to_representation is written out for speed; it must equal DRF's own."""
    from rest_framework import serializers as drf

    from tunnels.api.serializers import TunnelSerializer

    tunnel = make_tunnel(owner, ssh_port=2200)
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING, started_at=timezone.now(), pid=9, node="n")
    tunnel = Tunnel.objects.select_related("owner").get(pk=tunnel.pk)
    serializer = TunnelSerializer(tunnel)
    generic = drf.Serializer.to_representation(serializer, tunnel)
    assert serializer.data == generic
    assert list(serializer.data) == TunnelSerializer.Meta.fields


def test_a_row_that_no_longer_validates_still_lists(owner, owner_client):
    # Saved before the IPv6 zone-id rule existed: the list shows it as configured instead of failing.
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(local_port="[::1%a b]:17021")
    body = owner_client.get(URL).json()
    assert body["entries"][0]["listen"] == "[::1%a b]:17021"


def test_list_items_equal_the_single_tunnel_view(owner, owner_client):
    """Lists build items from values() rows; they must read exactly like GET tunnels/{id}/."""
    tunnel = make_tunnel(owner, ssh_port=2200)
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING, started_at=timezone.now(), pid=9, node="n")
    make_tunnel(owner, name="reverse", direction="local_to_remote", remote_port="0.0.0.0:9000")
    for item in owner_client.get(URL).json()["entries"]:
        assert item == owner_client.get(f"{URL}{item['id']}/").json()


def test_unknown_uuid_is_404(owner_client):
    assert owner_client.get(f"{URL}{uuid.uuid4()}/").status_code == 404
