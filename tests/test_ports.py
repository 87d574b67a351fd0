"""Ports on this host: claims across users, the pool and per-user ranges, reserved ports,
auto-assigned ports, and the settings behind them (README "Ports on this host")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import client_for
from tests.factories import make_tunnel, tunnel_data
from tunnels import services
from tunnels.models import ConfigBackup, Tunnel, listen_address
from tunnelsite import env

pytestmark = pytest.mark.django_db
URL = "/api/v1/tunnels/"
ROOT = Path(__file__).resolve().parent.parent


def backup_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "backups").rglob("*.json"))


def assert_nothing_changed(data_dir: Path, rows: int, backups: int) -> None:
    assert Tunnel.objects.count() == rows
    assert ConfigBackup.objects.count() == backups
    assert len(backup_files(data_dir)) == backups


# --- claims ---------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["{p}", "127.0.0.1:{p}", "[::1]:{p}", "0.0.0.0:{p}", "[::]:{p}"])
def test_every_address_of_a_port_is_refused_to_another_user(owner, other, spelling, data_dir):
    make_tunnel(owner, local_port="20001")
    other.allow_nonloopback_bind = True  # so 0.0.0.0 and [::] reach the claim check
    other.save()
    with pytest.raises(services.PortTaken) as refused:
        make_tunnel(other, local_port=spelling.format(p=20001))
    assert refused.value.status == 409
    assert "alice" not in refused.value.message
    assert_nothing_changed(data_dir, rows=1, backups=1)


def test_a_second_tunnel_of_the_same_user_may_not_share_its_port(owner):
    make_tunnel(owner, local_port="20001", name="a")
    with pytest.raises(services.PortTaken):
        make_tunnel(owner, local_port="[::1]:20001", name="b")


def test_staff_are_not_exempt_from_claims(owner, staff):
    make_tunnel(owner, local_port="20001")
    with pytest.raises(services.PortTaken):
        make_tunnel(staff, local_port="0.0.0.0:20001")


def test_an_R_tunnel_claims_nothing_here(owner, other):
    make_tunnel(owner, local_port="20001", direction="local_to_remote")
    tunnel = make_tunnel(other, local_port="20001")
    assert tunnel.listen_port == 20001
    assert Tunnel.objects.get(owner=owner).listen_port is None


def test_deleting_or_moving_a_tunnel_frees_its_port(owner, other):
    tunnel = make_tunnel(owner, local_port="20001")
    moved = make_tunnel(owner, local_port="20002")
    services.update_tunnel(moved, {"local_port": "20003"}, partial=True)
    make_tunnel(other, local_port="20002")
    services.delete_tunnel(tunnel)
    make_tunnel(other, local_port="20001")


def test_switching_direction_claims_and_frees(owner, other):
    tunnel = make_tunnel(owner, local_port="20001", direction="local_to_remote")
    make_tunnel(other, local_port="20001")
    with pytest.raises(services.PortTaken):
        services.update_tunnel(tunnel, {"direction": "remote_to_local"}, partial=True)
    tunnel.refresh_from_db()
    assert (tunnel.direction, tunnel.listen_port) == ("local_to_remote", None)


def test_an_update_that_keeps_the_port_is_fine(owner):
    tunnel = make_tunnel(owner, local_port="20001")
    services.update_tunnel(tunnel, {"name": "renamed"}, partial=True)
    tunnel.refresh_from_db()
    assert (tunnel.name, tunnel.listen_port) == ("renamed", 20001)


def test_rest_create_put_and_patch_answer_409_without_saying_whose(owner, other, other_client, data_dir):
    make_tunnel(owner, local_port="20001", name="alice-secret-service")
    mine = make_tunnel(other, local_port="20002")
    before = (Tunnel.objects.count(), ConfigBackup.objects.count())

    responses = [
        other_client.post(URL, tunnel_data(local_port="[::1]:20001"), format="json"),
        other_client.put(f"{URL}{mine.uuid}/", tunnel_data(local_port="20001"), format="json"),
        other_client.patch(f"{URL}{mine.uuid}/", {"local_port": "20001"}, format="json"),
    ]
    for response in responses:
        assert response.status_code == 409, response.json()
        body = json.dumps(response.json())
        assert "taken" in body and "local_port" in response.json()["fields"]
        assert "alice" not in body and "secret-service" not in body
    assert_nothing_changed(data_dir, *before)
    mine.refresh_from_db()
    assert mine.local_port == "20002"


@pytest.fixture
def compat_client(other):
    return client_for(other)


def test_compat_new_edit_update_and_replace_all_answer_409(owner, other, compat_client, data_dir):
    make_tunnel(owner, local_port="20001")
    mine = make_tunnel(other, local_port="20002")
    before = (Tunnel.objects.count(), ConfigBackup.objects.count())
    taken = tunnel_data(local_port="20001")
    responses = [
        compat_client.post("/config/new", taken, format="json"),
        compat_client.post("/edit", taken, format="json"),
        compat_client.post(f"/config/{mine.hash}", taken, format="json"),
        compat_client.post("/config", {"tunnels": [tunnel_data(local_port="20003"), taken]}, format="json"),
        compat_client.put("/config", {"tunnels": [taken]}, format="json"),
    ]
    for response in responses:
        assert response.status_code == 409, response.json()
        assert "taken" in response.json()["error"] and "alice" not in response.json()["error"]
    assert_nothing_changed(data_dir, *before)


def test_replace_all_may_not_list_one_port_twice(other, compat_client, data_dir):
    body = {"tunnels": [tunnel_data(local_port="20001"), tunnel_data(local_port="0.0.0.0:20001")]}
    other.allow_nonloopback_bind = True
    other.save()
    response = compat_client.post("/config", body, format="json")
    assert response.status_code == 409
    assert "tunnels[1] listens on port 20001 as tunnels[0] does" in response.json()["error"]
    assert_nothing_changed(data_dir, 0, 0)


def test_replace_all_may_reuse_its_own_ports(owner):
    first = make_tunnel(owner, local_port="20001", name="a")
    make_tunnel(owner, local_port="20002", name="b")
    services.replace_all(owner, [tunnel_data(local_port="20002", name="c"), tunnel_data(local_port="20001")])
    assert sorted(Tunnel.objects.values_list("listen_port", flat=True)) == [20001, 20002]
    assert not Tunnel.objects.filter(pk=first.pk).exists()


def test_restoring_a_backup_whose_port_was_taken_since_is_409(owner, other, data_dir):
    tunnel = make_tunnel(owner, local_port="20001")
    services.delete_tunnel(tunnel)
    backup = ConfigBackup.objects.filter(reason__startswith="before delete").get()
    make_tunnel(other, local_port="20001")
    before = (Tunnel.objects.count(), ConfigBackup.objects.count())
    with pytest.raises(services.PortTaken):
        services.restore_backup(backup)
    assert_nothing_changed(data_dir, *before)


def test_a_tunnel_without_its_port_cannot_be_started(owner, other):
    tunnel = services.create_tunnel(owner, tunnel_data(local_port="20001"), start=False)
    Tunnel.objects.filter(pk=tunnel.pk).update(listen_port=None)  # as the migration leaves a later duplicate
    tunnel.refresh_from_db()
    with pytest.raises(services.NotRunnable, match="change its local_port"):
        services.request_start(tunnel)
    with pytest.raises(services.NotRunnable):
        services.request_restart(tunnel)
    started, skipped = services.start_all(Tunnel.objects.all())
    assert (started, skipped) == ([], [tunnel])


# --- ranges -----------------------------------------------------------------


def test_ordinary_users_listen_in_the_pool(owner, settings):
    assert owner.port_range == (20000, 29999)
    with pytest.raises(services.QuotaExceeded, match="outside your allowed range 20000-29999"):
        make_tunnel(owner, local_port="15001")
    settings.PORT_RANGE = (15000, 15010)
    assert make_tunnel(owner, local_port="15001").listen_port == 15001


def test_a_per_user_range_replaces_the_pool(owner, other):
    owner.local_port_min, owner.local_port_max = 31000, 31009
    owner.save()
    make_tunnel(owner, local_port="31005")
    with pytest.raises(services.QuotaExceeded, match="31000-31009"):
        make_tunnel(owner, local_port="20001")
    with pytest.raises(services.QuotaExceeded, match="20000-29999"):
        make_tunnel(other, local_port="31006")


def test_staff_are_exempt_from_ranges(staff):
    assert make_tunnel(staff, local_port="15001").listen_port == 15001


def test_the_range_does_not_apply_to_R_targets(owner):
    """For -R, local_port is where the tunnel connects (the target policy's business)."""
    assert make_tunnel(owner, local_port="15001", direction="local_to_remote").listen_port is None


def test_staff_set_a_range_through_the_users_api(owner, owner_client, staff_client):
    response = staff_client.patch("/api/v1/users/alice/", {"local_port_min": 31000, "local_port_max": 31001})
    assert response.status_code == 200
    assert owner_client.post(URL, tunnel_data(local_port="31001"), format="json").status_code == 201
    assert owner_client.post(URL, tunnel_data(local_port="20001"), format="json").status_code == 403


# --- reserved ports -----------------------------------------------------------


def test_the_web_port_is_reserved_even_inside_a_users_range(owner, settings, data_dir):
    assert (8080, 8080) in settings.RESERVED_PORTS  # the default TUNNELSITE_BIND
    owner.local_port_min, owner.local_port_max = 1024, 65535
    owner.save()
    with pytest.raises(services.QuotaExceeded, match="reserved on this host") as refused:
        make_tunnel(owner, local_port="8080")
    assert refused.value.status == 403
    assert_nothing_changed(data_dir, 0, 0)


def test_reserved_ranges_apply_to_everyone_but_staff(owner, staff, client, settings):
    settings.RESERVED_PORTS = [(20010, 20019)]
    with pytest.raises(services.QuotaExceeded, match="20010-20019"):
        make_tunnel(owner, local_port="20015")
    make_tunnel(staff, local_port="20015")
    response = client_for(owner).post(URL, tunnel_data(local_port="20019"), format="json")
    assert response.status_code == 403 and "reserved" in response.json()["error"]


# --- auto-assign ----------------------------------------------------------------


def test_rest_create_without_local_port_gets_the_first_free_port(owner, owner_client, other, settings):
    settings.RESERVED_PORTS = [(20001, 20001)]
    make_tunnel(other, local_port="20000")
    data = tunnel_data()
    del data["local_port"]
    first = owner_client.post(URL, data, format="json")
    second = owner_client.post(URL, {**data, "name": "second"}, format="json")
    assert (first.status_code, second.status_code) == (201, 201), first.json()
    assert (first.json()["local_port"], first.json()["listen"]) == ("20002", "127.0.0.1:20002")
    assert second.json()["local_port"] == "20003"
    assert Tunnel.objects.get(uuid=first.json()["id"]).listen_port == 20002


def test_auto_assign_uses_the_owners_own_range(owner):
    owner.local_port_min, owner.local_port_max = 31000, 31001
    owner.save()
    data = tunnel_data()
    del data["local_port"]
    ports = [services.create_tunnel(owner, {**data, "name": n}, assign_port=True).local_port for n in "ab"]
    assert ports == ["31000", "31001"]
    with pytest.raises(services.NoFreePort, match="no free port left in your range 31000-31001") as refused:
        services.create_tunnel(owner, {**data, "name": "c"}, assign_port=True)
    assert refused.value.status == 409
    assert ConfigBackup.objects.count() == 2


def test_a_full_range_is_409_over_rest(owner, owner_client, settings, data_dir):
    owner.local_port_min, owner.local_port_max = 31000, 31000
    owner.save()
    settings.RESERVED_PORTS = [(31000, 31000)]
    data = tunnel_data()
    del data["local_port"]
    response = owner_client.post(URL, data, format="json")
    assert response.status_code == 409
    assert "no free port left in your range 31000-31000" in response.json()["error"]
    assert_nothing_changed(data_dir, 0, 0)


def test_an_R_tunnel_must_name_its_target(owner_client):
    data = tunnel_data(direction="local_to_remote")
    del data["local_port"]
    response = owner_client.post(URL, data, format="json")
    assert response.status_code == 400
    assert "local_to_remote" in response.json()["fields"]["local_port"][0]


def test_compat_create_still_requires_local_port(owner_client):
    data = tunnel_data()
    del data["local_port"]
    for path in ("/config/new", "/edit"):
        response = owner_client.post(path, data, format="json")
        assert response.status_code == 400
        assert response.json()["error"] == "Missing required fields: local_port"
    assert not Tunnel.objects.exists()


# --- the admin ------------------------------------------------------------------


@pytest.fixture
def admin_client_(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123"))
    return client


def admin_form(owner, **overrides) -> dict:
    return {**tunnel_data(), "owner": owner.pk, "direction": "remote_to_local", "desired_state": "stopped", **overrides}


def test_admin_refuses_a_taken_port_as_a_form_error(admin_client_, owner, other, data_dir):
    make_tunnel(owner, local_port="20001")
    response = admin_client_.post("/admin/tunnels/tunnel/add/", admin_form(other, local_port="[::1]:20001"))
    assert response.status_code == 200
    assert b"already taken by another tunnel" in response.content
    assert_nothing_changed(data_dir, 1, 1)


def test_admin_refuses_a_taken_port_on_change(admin_client_, owner, other, data_dir):
    make_tunnel(owner, local_port="20001")
    mine = make_tunnel(other, local_port="20002")
    form = admin_form(other, **{k: getattr(mine, k) for k in ("name", "remote_host", "remote_port")})
    response = admin_client_.post(f"/admin/tunnels/tunnel/{mine.pk}/change/", {**form, "local_port": "20001"})
    assert response.status_code == 200
    assert b"already taken by another tunnel" in response.content
    mine.refresh_from_db()
    assert mine.local_port == "20002"


def test_admin_assigns_a_port_when_left_empty(admin_client_, owner):
    response = admin_client_.post("/admin/tunnels/tunnel/add/", admin_form(owner, local_port="", name="auto"))
    assert response.status_code == 302, response.content[:2000]
    assert Tunnel.objects.get(name="auto").local_port == "20000"


def test_admin_shows_a_users_effective_range(admin_client_, owner):
    page = admin_client_.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()
    assert "20000-29999 (the server-wide pool)" in page
    owner.local_port_min, owner.local_port_max = 31000, 31009
    owner.save()
    page = admin_client_.get(f"/admin/accounts/user/{owner.pk}/change/").content.decode()
    assert "31000-31009 (this user&#x27;s own range)" in page


# --- display --------------------------------------------------------------------


def test_ipv6_listen_addresses_are_bracketed(owner, owner_client):
    assert listen_address("remote_to_local", "[::1]:20001", "80", "u@h") == "[::1]:20001"
    assert listen_address("local_to_remote", "20001", "[::1]:2222", "u@h") == "[::1]:2222"
    assert listen_address("local_to_remote", "20001", "2222", "u@h") == "localhost:2222"
    make_tunnel(owner, local_port="[::1]:20001")
    assert owner_client.get(URL).json()["entries"][0]["listen"] == "[::1]:20001"


# --- settings -------------------------------------------------------------------


def test_port_settings_parse_and_name_the_variable_on_a_bad_value(monkeypatch):
    monkeypatch.setenv("X_RANGE", "21000-21999")
    assert env.env_port_range("X_RANGE", (1, 2)) == (21000, 21999)
    for bad in ["21000-", "abc", "30000-20000", "0-10", "1-70000", "1-2,3-4"]:
        monkeypatch.setenv("X_RANGE", bad)
        with pytest.raises(ImproperlyConfigured, match="X_RANGE"):
            env.env_port_range("X_RANGE", (1, 2))
    monkeypatch.setenv("X_RESERVED", " 8080, 5432 ,6000-6010,")
    assert env.env_port_ranges("X_RESERVED", []) == [(8080, 8080), (5432, 5432), (6000, 6010)]
    monkeypatch.setenv("X_RESERVED", "")
    assert env.env_port_ranges("X_RESERVED", [(1, 1)]) == []
    assert (env.bind_port("0.0.0.0:8000"), env.bind_port("[::1]:9000"), env.bind_port("unix:/run/x")) == (
        8000,
        9000,
        None,
    )


def settings_in_subprocess(**environ: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps({'range': settings.PORT_RANGE, 'reserved': settings.RESERVED_PORTS}))"
    )
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TUNNELSITE_", "DATABASE_URL"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**keep, "DJANGO_SETTINGS_MODULE": "tunnelsite.settings", **environ},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        return {"error": result.stderr}
    return json.loads(result.stdout)


def test_reserved_ports_default_to_the_web_bind_and_database_ports(tmp_path):
    data = {"TUNNELSITE_DATA_DIR": str(tmp_path)}
    assert settings_in_subprocess(**data) == {"range": [20000, 29999], "reserved": [[8080, 8080]]}
    postgres = settings_in_subprocess(
        **data, TUNNELSITE_BIND="0.0.0.0:8123", DATABASE_URL="postgres://u@db.example:6543/x"
    )
    assert postgres["reserved"] == [[8123, 8123], [6543, 6543]]
    default_port = settings_in_subprocess(**data, DATABASE_URL="postgres://u@localhost/x")
    assert default_port["reserved"] == [[8080, 8080], [5432, 5432]]
    chosen = settings_in_subprocess(
        **data, TUNNELSITE_RESERVED_PORTS="22,9000-9009", TUNNELSITE_PORT_RANGE="40000-40999"
    )
    assert chosen == {"range": [40000, 40999], "reserved": [[22, 22], [9000, 9009]]}
    bad = settings_in_subprocess(**data, TUNNELSITE_PORT_RANGE="40000-")
    assert "TUNNELSITE_PORT_RANGE" in bad["error"] and "ImproperlyConfigured" in bad["error"]
