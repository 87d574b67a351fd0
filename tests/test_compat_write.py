"""Compat API, changes: /edit, /delete/<h>, /config (replace all), /config/new, /config/<h>; bad input; backups."""

from __future__ import annotations

import json

import pytest

from tests.factories import make_tunnel, tunnel_data
from tunnels.models import ConfigBackup, Desired, Tunnel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _seed_ports(settings):
    """The seed's examples listen on ports (13306-55001) outside the default pool: widen it here."""
    settings.PORT_RANGE = (1024, 65535)


MOUNTS = ["", "/api/autossh"]
NEW = {
    "name": "my-new-tunnel",
    "remote_host": "user@server.example.com",
    "remote_port": "8080",
    "local_port": "18080",
    "direction": "remote_to_local",
    "interactive": False,
}


def config_of(user) -> list[dict]:
    return [t.compat_dict() for t in Tunnel.objects.filter(owner=user)]


def backup_files(data_dir) -> list:
    return sorted((data_dir / "backups").rglob("*.json")) if (data_dir / "backups").exists() else []


def post_raw(client, path: str, body: bytes | str, method: str = "post", content_type: str = "application/json"):
    return getattr(client, method)(path, body, content_type=content_type)


# --- /config/new ----------------------------------------------------------


@pytest.mark.parametrize("mount", MOUNTS)
def test_config_new_creates_201_with_object(mount, owner, owner_client):
    response = owner_client.post(f"{mount}/config/new", NEW, format="json")
    assert response.status_code == 201
    tunnel = Tunnel.objects.get(owner=owner)
    assert response.json() == {**NEW, "hash": tunnel.hash}
    assert tunnel.desired_state == Desired.RUNNING  # auto-apply: a new tunnel is meant to run


def test_config_new_accepts_ports_as_numbers_and_ssh_port(owner, owner_client):
    body = {**NEW, "remote_port": 8080, "local_port": 18080, "ssh_port": 2222, "colour": "ignored"}
    response = owner_client.post("/config/new", body, format="json")
    assert response.status_code == 201
    assert response.json()["remote_port"] == "8080" and response.json()["local_port"] == "18080"
    assert Tunnel.objects.get(owner=owner).ssh_port == 2222


def test_config_new_defaults_direction_interactive(owner, owner_client):
    body = {"name": "db", "remote_host": "user@ssh.example.com", "remote_port": "5001", "local_port": "55001"}
    item = owner_client.post("/config/new", body, format="json").json()
    assert (item["name"], item["direction"], item["interactive"]) == ("db", "remote_to_local", False)


@pytest.mark.parametrize("mount", MOUNTS)
@pytest.mark.parametrize("name", [None, "", "absent"])
def test_config_new_requires_name_and_creates_nothing(mount, name, owner, owner_client, data_dir):
    body = {k: v for k, v in NEW.items() if k != "name"}
    if name != "absent":
        body["name"] = name
    response = owner_client.post(f"{mount}/config/new", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "Missing required fields: name"}
    assert not Tunnel.objects.exists() and not ConfigBackup.objects.exists() and not backup_files(data_dir)
    both = owner_client.post(f"{mount}/config/new", {"local_port": "18080"}, format="json")
    assert both.json() == {"error": "Missing required fields: name, remote_host, remote_port"}


def test_edit_still_defaults_the_name_as_the_original(owner, owner_client):
    body = {k: v for k, v in NEW.items() if k != "name"}
    assert owner_client.post("/edit", body, format="json").status_code == 201
    assert Tunnel.objects.get(owner=owner).name == "unnamed"


def test_config_new_interactive_is_not_meant_to_run(owner, owner_client):
    owner_client.post("/config/new", {**NEW, "interactive": True}, format="json")
    assert Tunnel.objects.get(owner=owner).desired_state == Desired.STOPPED


def test_config_new_missing_fields_names_them(owner, owner_client):
    response = owner_client.post("/config/new", {"name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "Missing required fields: remote_host, remote_port, local_port"}


def test_config_new_duplicate_is_409(owner, owner_client):
    assert owner_client.post("/config/new", NEW, format="json").status_code == 201
    response = owner_client.post("/config/new", NEW, format="json")
    assert response.status_code == 409 and "already exists" in response.json()["error"]
    assert Tunnel.objects.count() == 1


def test_config_new_unicode_name(owner, owner_client):
    response = owner_client.post("/config/new", {**NEW, "name": "隧道-ü-🚀"}, format="json")
    assert response.status_code == 201
    assert owner_client.get("/config").json()["tunnels"][0]["name"] == "隧道-ü-🚀"


def test_config_new_refuses_values_that_could_become_ssh_options(owner, owner_client):
    for bad in ({"remote_host": "-oProxyCommand=sh"}, {"local_port": "1 -R 2"}, {"remote_port": "-1"}):
        response = owner_client.post("/config/new", {**NEW, **bad}, format="json")
        assert response.status_code == 400, bad
    assert Tunnel.objects.count() == 0


# --- /config/<h> update and delete ----------------------------------------


@pytest.mark.parametrize("method", ["post", "put"])
def test_config_update_returns_object_with_new_hash(method, owner, owner_client):
    tunnel = make_tunnel(owner)
    body = {
        "name": "updated-tunnel",
        "remote_host": "user@new-server.example.com",
        "remote_port": 9090,
        "local_port": "19090",
    }
    response = getattr(owner_client, method)(f"/config/{tunnel.hash[:8]}", body, format="json")
    assert response.status_code == 200
    tunnel.refresh_from_db()
    assert response.json() == {
        **body,
        "remote_port": "9090",
        "direction": "remote_to_local",
        "interactive": False,
        "hash": tunnel.hash,
    }
    assert tunnel.hash != response.wsgi_request.path.rsplit("/", 1)[-1]


def test_config_update_keeps_ssh_port_the_client_does_not_know(owner, owner_client):
    tunnel = make_tunnel(owner, ssh_port=2222)
    body = {k: v for k, v in tunnel.compat_dict().items() if k != "hash"} | {"name": "renamed"}
    owner_client.post(f"/config/{tunnel.hash}", body, format="json")
    tunnel.refresh_from_db()
    assert (tunnel.name, tunnel.ssh_port) == ("renamed", 2222)


def test_config_update_of_running_tunnel_restarts_it(owner, owner_client):
    tunnel = make_tunnel(owner)
    assert tunnel.desired_state == Desired.RUNNING
    generation = tunnel.generation
    owner_client.put(f"/config/{tunnel.hash}", {**tunnel_data(), "name": "changed"}, format="json")
    tunnel.refresh_from_db()
    assert tunnel.generation == generation + 1 and tunnel.desired_state == Desired.RUNNING


def test_config_update_missing_fields_changes_nothing(owner, owner_client):
    tunnel = make_tunnel(owner)
    before = config_of(owner)
    response = owner_client.post(f"/config/{tunnel.hash}", {"name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "Missing required fields: remote_host, remote_port, local_port"
    assert config_of(owner) == before


@pytest.mark.parametrize("how", ["delete", "post-delete"])
def test_config_delete(how, owner, owner_client):
    tunnel, keep = make_tunnel(owner), make_tunnel(owner)
    if how == "delete":
        response = owner_client.delete(f"/config/{tunnel.hash[:8]}")
    else:
        response = owner_client.post(f"/config/{tunnel.hash[:8]}/delete")
    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Tunnel deleted"}
    assert list(Tunnel.objects.values_list("pk", flat=True)) == [keep.pk]


# --- /edit and /delete/<h> ------------------------------------------------


@pytest.mark.parametrize("mount", MOUNTS)
def test_edit_without_hash_adds(mount, owner, owner_client):
    response = owner_client.post(f"{mount}/edit", NEW, format="json")
    assert response.status_code == 201
    tunnel = Tunnel.objects.get(owner=owner)
    assert response.json() == {"status": "success", "action": "added", "hash": tunnel.hash}


def test_edit_with_hash_updates(owner, owner_client):
    tunnel = make_tunnel(owner)
    body = {
        "hash": tunnel.hash,
        "name": "updated-tunnel",
        "remote_host": "user@new-server.example.com",
        "remote_port": "9090",
        "local_port": "19090",
    }
    response = owner_client.post("/edit", body, format="json")
    assert response.status_code == 200
    new = Tunnel.objects.get(pk=tunnel.pk)
    assert response.json() == {"status": "success", "action": "updated", "old_hash": tunnel.hash, "new_hash": new.hash}
    assert new.hash != tunnel.hash and new.name == "updated-tunnel"


def test_edit_with_unknown_or_bad_hash(owner, owner_client):
    make_tunnel(owner)
    assert owner_client.post("/edit", {**NEW, "hash": "ffffffff"}, format="json").status_code == 404
    assert owner_client.post("/edit", {**NEW, "hash": "abc"}, format="json").status_code == 400
    response = owner_client.post("/edit", {**NEW, "hash": 12345678}, format="json")
    assert response.status_code == 400 and response.json() == {"error": "hash must be a string"}
    assert Tunnel.objects.count() == 1


def test_edit_missing_fields(owner, owner_client):
    response = owner_client.post("/edit", {"name": "only", "local_port": "1"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "Missing required fields: remote_host, remote_port"}


@pytest.mark.parametrize("method", ["delete", "post"])
def test_delete_by_prefix(method, owner, owner_client):
    tunnel = make_tunnel(owner)
    response = getattr(owner_client, method)(f"/delete/{tunnel.hash[:8]}")
    assert response.status_code == 200
    assert response.json() == {"status": "success", "action": "deleted", "hash": tunnel.hash}
    assert not Tunnel.objects.exists()


# --- replace all ----------------------------------------------------------


@pytest.mark.parametrize("method", ["post", "put"])
def test_replace_all_replaces_and_keeps_unchanged_tunnels(method, owner, owner_client):
    kept, dropped = make_tunnel(owner), make_tunnel(owner)
    new = tunnel_data()
    body = {"tunnels": [{k: v for k, v in kept.compat_dict().items() if k != "hash"}, new]}
    response = getattr(owner_client, method)("/config", body, format="json")
    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Configuration saved"}
    names = list(Tunnel.objects.filter(owner=owner).values_list("name", flat=True))
    assert sorted(names) == sorted([kept.name, new["name"]])
    assert Tunnel.objects.filter(pk=kept.pk).exists() and not Tunnel.objects.filter(pk=dropped.pk).exists()


def test_replace_all_with_empty_list_removes_everything(owner, owner_client):
    make_tunnel(owner)
    assert owner_client.post("/config", {"tunnels": []}, format="json").status_code == 200
    assert not Tunnel.objects.exists()


def test_replace_all_leaves_other_users_alone(owner, other, owner_client):
    theirs = make_tunnel(other)
    owner_client.post("/config", {"tunnels": [tunnel_data()]}, format="json")
    assert Tunnel.objects.filter(pk=theirs.pk).exists()


def six_fields(tunnel: Tunnel) -> dict:
    """What the original's panel sends for a tunnel on "Save & Restart": the six fields, nothing else."""
    return {k: v for k, v in tunnel.compat_dict().items() if k != "hash"}


@pytest.mark.parametrize("method", ["post", "put"])
def test_replace_all_keeps_tunnelsite_settings_the_entry_does_not_send(method, owner, owner_client):
    from tests.worker_fixtures import make_key

    key = make_key(owner, name="laptop")
    tunnel = make_tunnel(owner, ssh_port=2222, auto_restart=False, ssh_key=str(key.pk))
    generation = tunnel.generation
    response = getattr(owner_client, method)("/config", {"tunnels": [six_fields(tunnel)]}, format="json")
    assert response.status_code == 200, response.json()
    kept = Tunnel.objects.get(owner=owner)
    assert kept.pk == tunnel.pk
    assert (kept.ssh_port, kept.auto_restart, kept.ssh_key_id) == (2222, False, key.pk)
    assert kept.generation == generation  # nothing changed: the worker does not restart it
    assert kept.desired_state == Desired.RUNNING


def test_replace_all_changes_tunnelsite_settings_the_entry_sends(owner, owner_client):
    from tests.worker_fixtures import make_key

    key = make_key(owner, name="laptop")
    tunnel = make_tunnel(owner, ssh_port=2222, auto_restart=False, ssh_key=str(key.pk))
    entry = {**six_fields(tunnel), "ssh_port": None, "auto_restart": True, "ssh_key": None}
    assert owner_client.post("/config", {"tunnels": [entry]}, format="json").status_code == 200
    kept = Tunnel.objects.get(owner=owner)
    assert kept.pk == tunnel.pk
    assert (kept.ssh_port, kept.auto_restart, kept.ssh_key_id) == (None, True, None)
    assert kept.generation == tunnel.generation + 1  # new ssh port and key: the worker restarts it
    entry = {**six_fields(tunnel), "ssh_port": 2200}
    assert owner_client.post("/config", {"tunnels": [entry]}, format="json").status_code == 200
    assert Tunnel.objects.get(pk=tunnel.pk).ssh_port == 2200


def test_replace_all_new_tunnels_get_the_defaults(owner, owner_client):
    assert owner_client.post("/config", {"tunnels": [tunnel_data()]}, format="json").status_code == 200
    created = Tunnel.objects.get(owner=owner)
    assert (created.ssh_port, created.auto_restart) == (None, True)


def test_config_get_edit_post_round_trip_keeps_settings(owner, owner_client):
    make_tunnel(owner, ssh_port=2222, auto_restart=False)
    config = owner_client.get("/config").json()
    config["tunnels"][0]["name"] = "renamed"  # a new hash: the entry is a new tunnel with the sent settings
    assert owner_client.post("/config", config, format="json").status_code == 200
    renamed = Tunnel.objects.get(owner=owner)
    assert (renamed.name, renamed.ssh_port, renamed.auto_restart) == ("renamed", 2222, False)


BAD_BODIES = [
    (b"", "Request body required"),
    (b"   ", "Request body required"),
    (b"garbage", "Request body is not valid JSON"),
    (b'{"tunnels": [', "Request body is not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "Request body is not valid JSON: nested too deeply"),
    (b"\xff\xfe\x00", "Request body is not valid UTF-8"),
    (b"[]", "Request body must be a JSON object, got list"),
    (b'"tunnels"', "Request body must be a JSON object, got str"),
    (b"null", "Request body must be a JSON object, got NoneType"),
    (b"{}", "Request body must have a 'tunnels' list"),
    (b'{"tunnels": {"a": 1}}', "'tunnels' must be a list of tunnel objects"),
    (b'{"tunnels": "x"}', "'tunnels' must be a list of tunnel objects"),
    (b'{"tunnels": [1]}', "tunnels[0]: non_field_errors: expected a JSON object with tunnel fields"),
]


@pytest.mark.parametrize("method", ["post", "put"])
@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_replace_all_bad_body_is_400_and_changes_nothing(method, body, message, owner, owner_client, data_dir):
    make_tunnel(owner), make_tunnel(owner)
    before, backups = config_of(owner), ConfigBackup.objects.count()
    response = post_raw(owner_client, "/config", body, method=method)
    assert response.status_code == 400
    assert response.json()["error"].startswith(message)
    assert set(response.json()) == {"error"}
    assert config_of(owner) == before
    assert ConfigBackup.objects.count() == backups


def test_replace_all_with_one_bad_entry_changes_nothing(owner, owner_client):
    make_tunnel(owner)
    before = config_of(owner)
    body = {"tunnels": [tunnel_data(), tunnel_data(remote_port="not-a-port"), tunnel_data()]}
    response = owner_client.post("/config", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"].startswith("tunnels[1]: remote_port:")
    missing = owner_client.post("/config", {"tunnels": [tunnel_data(), {"name": "x"}]}, format="json")
    assert missing.json()["error"] == "tunnels[1]: Missing required fields: remote_host, remote_port, local_port"
    assert config_of(owner) == before


def test_replace_all_with_duplicate_entries_changes_nothing(owner, owner_client):
    make_tunnel(owner)
    before = config_of(owner)
    same = tunnel_data()
    response = owner_client.post("/config", {"tunnels": [same, same]}, format="json")
    assert response.status_code == 409
    assert config_of(owner) == before


def test_one_megabyte_body_is_400_and_changes_nothing(owner, owner_client):
    make_tunnel(owner)
    before = config_of(owner)
    huge_name = json.dumps({"tunnels": [tunnel_data(name="n" * 1024 * 1024)]})
    assert owner_client.post("/config", huge_name, content_type="application/json").status_code == 400
    assert (
        owner_client.post(
            "/config/new", json.dumps(tunnel_data(name="n" * 1024 * 1024)), content_type="application/json"
        ).status_code
        == 400
    )
    junk = b"x" * (1024 * 1024)
    response = post_raw(owner_client, "/config", junk)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert config_of(owner) == before


def test_body_over_the_upload_limit_is_400(settings, owner, owner_client):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    response = post_raw(owner_client, "/config/new", json.dumps({**NEW, "name": "n" * 5000}))
    assert response.status_code == 400
    assert response.json() == {"error": "Request body too large (limit 4096 bytes)"}


@pytest.mark.parametrize("path", ["/config/new", "/edit", "/config/{h}", "/config"])
@pytest.mark.parametrize(("body", "message"), BAD_BODIES[:8])
def test_every_body_route_refuses_bad_bodies(path, body, message, owner, owner_client):
    tunnel = make_tunnel(owner)
    before = config_of(owner)
    response = post_raw(owner_client, path.format(h=tunnel.hash), body)
    assert response.status_code == 400 and response.json()["error"].startswith(message)
    assert config_of(owner) == before


def test_form_encoded_json_body_is_read_as_json(owner, owner_client):
    """curl -d '{...}' without a Content-Type header sends form-encoded; the original read the body anyway."""
    response = post_raw(owner_client, "/config/new", json.dumps(NEW), content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201


# --- backups --------------------------------------------------------------


def test_every_change_leaves_one_more_backup(owner, owner_client, data_dir):
    steps = [
        lambda: owner_client.post("/config/new", NEW, format="json"),
        lambda: owner_client.post("/edit", tunnel_data(), format="json"),
        lambda: owner_client.post(f"/config/{Tunnel.objects.first().hash}", tunnel_data(), format="json"),
        lambda: owner_client.post("/edit", {**tunnel_data(), "hash": Tunnel.objects.first().hash}, format="json"),
        lambda: owner_client.post("/config", {"tunnels": [tunnel_data(), tunnel_data()]}, format="json"),
        lambda: owner_client.delete(f"/config/{Tunnel.objects.first().hash}"),
        lambda: owner_client.post(f"/delete/{Tunnel.objects.first().hash}"),
    ]
    for count, step in enumerate(steps, start=1):
        assert step().status_code in (200, 201)
        assert ConfigBackup.objects.filter(owner=owner).count() == count
        assert len(backup_files(data_dir)) == count


def test_backup_holds_the_configuration_before_the_change(owner, owner_client, data_dir):
    tunnel = make_tunnel(owner)
    before = [t.backup_dict() for t in Tunnel.objects.filter(owner=owner)]
    owner_client.post("/config", {"tunnels": []}, format="json")
    backup = ConfigBackup.objects.filter(owner=owner).first()
    assert backup.tunnels == before
    assert json.loads((data_dir / "backups" / backup.file_name).read_text())["tunnels"][0]["hash"] == tunnel.hash


def test_two_changes_within_a_second_leave_two_backups(owner, owner_client, data_dir):
    owner_client.post("/config", {"tunnels": [tunnel_data()]}, format="json")
    owner_client.post("/config", {"tunnels": [tunnel_data()]}, format="json")
    backups = list(ConfigBackup.objects.filter(owner=owner))
    assert len(backups) == 2
    assert abs((backups[0].created_at - backups[1].created_at).total_seconds()) < 1
    assert len({b.file_name for b in backups}) == 2 and len(backup_files(data_dir)) == 2


def test_refused_changes_leave_no_backup(owner, owner_client, data_dir):
    owner_client.post("/config/new", {"name": "x"}, format="json")
    owner_client.post("/config", b"garbage", content_type="application/json")
    assert ConfigBackup.objects.count() == 0 and backup_files(data_dir) == []
