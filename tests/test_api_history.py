"""REST API v1: /api/v1/history/ (rustunnel shape) and /api/v1/backups/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import tokens
from tests.factories import make_tunnel
from tunnels.models import ConfigBackup, Tunnel, TunnelSession

pytestmark = pytest.mark.django_db

HISTORY = "/api/v1/history/"
BACKUPS = "/api/v1/backups/"


def session_for(tunnel, minutes_ago: int = 0, **extra) -> TunnelSession:
    started = timezone.now() - timedelta(minutes=minutes_ago)
    return TunnelSession.objects.create(
        tunnel=tunnel,
        owner=tunnel.owner,
        tunnel_uuid=tunnel.uuid,
        name=tunnel.name,
        hash=tunnel.hash,
        direction=tunnel.direction,
        listen=tunnel.listen,
        started_at=started,
        **extra,
    )


def test_history_entry_has_the_rustunnel_fields(owner, owner_client):
    tunnel = make_tunnel(owner, name="web")
    token, _ = tokens.mint(owner, label="ci-deploy")
    session = session_for(
        tunnel,
        token=token,
        token_label="ci-deploy",
        pid=77,
        node="n1",
        ended_at=timezone.now(),
        exit_reason="stopped_by_user",
    )
    body = owner_client.get(HISTORY).json()
    assert body["total"] == 1
    entry = body["entries"][0]
    assert entry["id"] == entry["session_id"] == str(session.id)
    assert entry["tunnel_id"] == str(tunnel.uuid)
    assert (entry["name"], entry["hash"], entry["label"]) == ("web", tunnel.hash, tunnel.listen)
    assert entry["token_id"] == str(token.id) and entry["token_label"] == "ci-deploy"
    assert entry["registered_at"] and entry["unregistered_at"]
    assert entry["exit_reason"] == "stopped_by_user"


def test_history_open_session_has_null_end_and_token(owner, owner_client):
    session_for(make_tunnel(owner))
    entry = owner_client.get(HISTORY).json()["entries"][0]
    assert entry["unregistered_at"] is None
    assert entry["token_id"] is None and entry["token_label"] is None


def test_a_staff_token_that_started_the_tunnel_is_shown_to_staff_only(owner, staff, owner_client, staff_client):
    token, _ = tokens.mint(staff, label="ops-laptop")
    own_token, _ = tokens.mint(owner, label="mine")
    tunnel = make_tunnel(owner)
    # What the worker records (reconciler._open_session): who asked, with which token.
    session_for(tunnel, minutes_ago=1, requested_by=staff, token=token, token_label=token.label)
    session_for(tunnel, requested_by=owner, token=own_token, token_label=own_token.label)
    for url in (HISTORY, f"/api/v1/tunnels/{tunnel.uuid}/sessions/"):
        mine, by_staff = owner_client.get(url).json()["entries"]
        assert (mine["token_id"], mine["token_label"]) == (str(own_token.id), "mine")
        assert (by_staff["token_id"], by_staff["token_label"]) == (None, None)
        entries = staff_client.get(url).json()["entries"]
        assert entries[1]["token_id"] == str(token.id) and entries[1]["token_label"] == "ops-laptop"


def test_history_is_newest_first_and_paginated(owner, owner_client):
    tunnel = make_tunnel(owner)
    for minutes in (30, 10, 20):
        session_for(tunnel, minutes)
    body = owner_client.get(HISTORY, {"limit": 2}).json()
    assert body["total"] == 3
    stamps = [entry["registered_at"] for entry in body["entries"]]
    assert len(stamps) == 2 and stamps == sorted(stamps, reverse=True)
    assert len(owner_client.get(HISTORY, {"limit": 2, "offset": 2}).json()["entries"]) == 1


def test_history_filters_direction_tunnel_since(owner, owner_client):
    a = make_tunnel(owner)
    b = make_tunnel(owner, direction="local_to_remote")
    session_for(a, 120)
    session_for(a, 5)
    session_for(b, 5)
    assert owner_client.get(HISTORY, {"direction": "local_to_remote"}).json()["total"] == 1
    assert owner_client.get(HISTORY, {"tunnel": str(a.uuid)}).json()["total"] == 2
    since = (timezone.now() - timedelta(minutes=60)).isoformat()
    assert owner_client.get(HISTORY, {"since": since}).json()["total"] == 2
    assert owner_client.get(HISTORY, {"tunnel": str(a.uuid), "since": since}).json()["total"] == 1


@pytest.mark.parametrize(("param", "value"), [("since", "yesterday"), ("tunnel", "abc"), ("direction", "up")])
def test_history_bad_filter_is_400(owner_client, param, value):
    response = owner_client.get(HISTORY, {param: value})
    assert response.status_code == 400
    assert param in response.json()["fields"]


def test_history_survives_tunnel_deletion(owner, owner_client):
    tunnel = make_tunnel(owner)
    session_for(tunnel)
    assert owner_client.delete(f"/api/v1/tunnels/{tunnel.uuid}/").status_code == 204
    body = owner_client.get(HISTORY, {"tunnel": str(tunnel.uuid)}).json()
    assert body["total"] == 1 and body["entries"][0]["name"] == tunnel.name


def test_history_isolation_and_staff(owner, other, owner_client, other_client, staff_client):
    session_for(make_tunnel(owner))
    assert other_client.get(HISTORY).json()["total"] == 0
    assert owner_client.get(HISTORY).json()["total"] == 1
    assert staff_client.get(HISTORY).json()["total"] == 1
    assert staff_client.get(HISTORY, {"owner": "bob"}).json()["total"] == 0


@pytest.mark.parametrize("count", [5, 300])
def test_history_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    tunnel = make_tunnel(owner)
    TunnelSession.objects.bulk_create(
        TunnelSession(
            tunnel=tunnel,
            owner=owner,
            tunnel_uuid=tunnel.uuid,
            name=tunnel.name,
            hash=tunnel.hash,
            direction=tunnel.direction,
        )
        for _ in range(count)
    )
    owner_client.get(HISTORY)
    with django_assert_num_queries(4):
        assert owner_client.get(HISTORY, {"limit": 500}).json()["total"] == count


# --- backups ----------------------------------------------------------------


def test_backups_list_and_retrieve(owner, owner_client):
    make_tunnel(owner, name="first")
    make_tunnel(owner, name="second")  # backed up "first" before creating
    body = owner_client.get(BACKUPS).json()
    assert body["total"] == 2
    newest = body["entries"][0]
    assert newest["reason"] == "before create" and newest["tunnel_count"] == 1 and newest["owner"] == "alice"
    detail = owner_client.get(f"{BACKUPS}{newest['id']}/").json()
    assert [t["name"] for t in detail["tunnels"]] == ["first"]
    assert {"ssh_port", "auto_restart"} <= set(detail["tunnels"][0])


@pytest.mark.parametrize("count", [5, 50])
def test_backups_list_query_count_is_constant(owner, owner_client, django_assert_num_queries, count):
    snapshot = [{"name": f"t{i}", "hash": f"{i:032x}"} for i in range(count)]
    ConfigBackup.objects.bulk_create(
        ConfigBackup(owner=owner, reason="test", tunnels=snapshot, file_name=f"b{i}.json") for i in range(count)
    )
    owner_client.get(BACKUPS)
    # token lookup, count, page (tunnel counts from the database), request-history insert
    with django_assert_num_queries(4):
        body = owner_client.get(BACKUPS, {"limit": 500}).json()
    assert body["total"] == count
    assert {entry["tunnel_count"] for entry in body["entries"]} == {count}


def test_backup_of_other_user_is_404(owner, other_client):
    make_tunnel(owner)
    backup = ConfigBackup.objects.get()
    assert other_client.get(f"{BACKUPS}{backup.id}/").status_code == 404
    assert other_client.post(f"{BACKUPS}{backup.id}/restore/").status_code == 404
    assert other_client.get(BACKUPS).json()["total"] == 0


def test_restore_puts_the_configuration_back_and_backs_up_first(owner, owner_client):
    make_tunnel(owner, name="keep")
    make_tunnel(owner, name="later")
    backup = ConfigBackup.objects.filter(owner=owner).order_by("-created_at").first()  # holds only "keep"
    before = ConfigBackup.objects.count()
    response = owner_client.post(f"{BACKUPS}{backup.id}/restore/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert [t["name"] for t in body["tunnels"]] == ["keep"]
    assert list(Tunnel.objects.values_list("name", flat=True)) == ["keep"]
    assert ConfigBackup.objects.count() == before + 1
    assert ConfigBackup.objects.order_by("-created_at").first().reason.startswith("before restore")


def test_restore_keeps_settings_a_backup_does_not_name_and_restores_those_it_does(owner, owner_client):
    tunnel = make_tunnel(owner, ssh_port=2222, auto_restart=False)
    full = ConfigBackup.objects.filter(owner=owner).order_by("-created_at").first()
    full.tunnels = [tunnel.backup_dict()]
    full.save()
    # A backup written before tunnelsite kept its own settings: the six fields only.
    older = ConfigBackup.objects.create(owner=owner, reason="old", tunnels=[tunnel.compat_dict()], file_name="x")
    assert owner_client.post(f"{BACKUPS}{older.id}/restore/").status_code == 200
    kept = Tunnel.objects.get(owner=owner)
    assert (kept.pk, kept.ssh_port, kept.auto_restart) == (tunnel.pk, 2222, False)
    Tunnel.objects.filter(pk=tunnel.pk).update(ssh_port=2200, auto_restart=True)
    assert owner_client.post(f"{BACKUPS}{full.id}/restore/").status_code == 200
    kept = Tunnel.objects.get(owner=owner)
    assert (kept.pk, kept.ssh_port, kept.auto_restart) == (tunnel.pk, 2222, False)


def test_restore_needs_write_scope(owner):
    from tests.conftest import client_for

    make_tunnel(owner)
    backup = ConfigBackup.objects.get()
    response = client_for(owner, ["read", "operate"]).post(f"{BACKUPS}{backup.id}/restore/")
    assert response.status_code == 403


def test_staff_sees_all_backups(owner, other, staff_client):
    make_tunnel(owner)
    make_tunnel(other)
    assert staff_client.get(BACKUPS).json()["total"] == 2
    assert staff_client.get(BACKUPS, {"owner": "alice"}).json()["total"] == 1
