from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import make_tunnel, tunnel_data
from tunnels import services
from tunnels.models import ConfigBackup, Desired, Status, Tunnel, WorkerNode

pytestmark = pytest.mark.django_db


def config_of(user) -> list[dict]:
    return [t.compat_dict() for t in Tunnel.objects.owned_by(user).order_by("created_at", "id")]


def backup_files(data_dir):
    return sorted((data_dir / "backups").rglob("*.json"))


def test_create_starts_non_interactive_and_backs_up(owner, data_dir):
    tunnel = make_tunnel(owner)
    assert tunnel.desired_state == Desired.RUNNING
    assert ConfigBackup.objects.filter(owner=owner).count() == 1
    assert len(backup_files(data_dir)) == 1


def test_create_interactive_stays_stopped(owner):
    assert make_tunnel(owner, interactive=True).desired_state == Desired.STOPPED


def test_create_interactive_with_an_explicit_start_begins_its_login(owner):
    tunnel = services.create_tunnel(owner, tunnel_data(interactive=True), start=True)
    assert Tunnel.objects.get(pk=tunnel.pk).desired_state == Desired.RUNNING


def test_update_of_a_running_interactive_tunnel(owner):
    """A new configuration needs a new login: stopped until a person starts it; auto_restart alone keeps it."""
    tunnel = services.create_tunnel(owner, tunnel_data(interactive=True), start=True)
    tunnel = services.update_tunnel(tunnel, {"auto_restart": False}, partial=True)
    assert tunnel.desired_state == Desired.RUNNING
    tunnel = services.update_tunnel(tunnel, {"remote_port": "9999"}, partial=True)
    assert tunnel.desired_state == Desired.STOPPED


def test_duplicate_config_is_refused(owner):
    data = tunnel_data()
    services.create_tunnel(owner, data)
    with pytest.raises(services.DuplicateTunnel, match="already exists"):
        services.create_tunnel(owner, data)
    assert Tunnel.objects.count() == 1


def test_same_config_for_two_owners_is_fine(owner, other):
    # An -R tunnel: its local_port is a target, held by nobody (two -L tunnels could not share a port).
    data = tunnel_data(direction="local_to_remote")
    services.create_tunnel(owner, data)
    services.create_tunnel(other, data)
    assert Tunnel.objects.count() == 2


def test_replace_all_with_bad_entry_in_middle_changes_nothing(owner, data_dir):
    make_tunnel(owner)
    make_tunnel(owner)
    before = config_of(owner)
    backups_before = ConfigBackup.objects.count()
    items = [tunnel_data(), tunnel_data(remote_host="-oProxyCommand=touch /tmp/x"), tunnel_data()]
    with pytest.raises(services.InvalidInput, match=r"tunnels\[1\]: remote_host"):
        services.replace_all(owner, items)
    assert config_of(owner) == before
    assert ConfigBackup.objects.count() == backups_before


def test_replace_all_replaces_and_writes_backup(owner, data_dir):
    keep = make_tunnel(owner)
    drop = make_tunnel(owner)
    new = tunnel_data()
    result = services.replace_all(owner, [keep.compat_dict(), new])
    assert {t.hash for t in result} == {keep.hash, Tunnel.objects.get(name=new["name"]).hash}
    assert not Tunnel.objects.filter(pk=drop.pk).exists()
    # The kept tunnel keeps its identity (and so its running process).
    assert Tunnel.objects.get(hash=keep.hash).uuid == keep.uuid
    latest = ConfigBackup.objects.filter(owner=owner).first()
    assert latest.reason == "before replace-all"
    assert {t["hash"] for t in latest.tunnels} == {keep.hash, drop.hash}
    on_disk = json.loads((data_dir / "backups" / latest.file_name).read_text())
    assert on_disk["tunnels"] == latest.tunnels


def test_replace_all_rejects_duplicates_within_request(owner):
    data = tunnel_data()
    with pytest.raises(services.DuplicateTunnel):
        services.replace_all(owner, [data, dict(data)])
    assert Tunnel.objects.count() == 0


def test_two_changes_in_one_second_leave_two_backup_files(owner, data_dir):
    make_tunnel(owner)
    make_tunnel(owner)
    files = backup_files(data_dir)
    assert len(files) == 2
    assert len({f.name for f in files}) == 2


def test_update_recomputes_hash_and_bumps_generation(owner):
    tunnel = make_tunnel(owner)
    old_hash, generation = tunnel.hash, tunnel.generation
    updated = services.update_tunnel(tunnel, {"local_port": "23456"}, partial=True)
    assert updated.hash != old_hash
    assert updated.generation == generation + 1
    assert updated.desired_state == Desired.RUNNING  # it is restarted, not stopped


def test_update_with_bad_value_changes_nothing(owner):
    tunnel = make_tunnel(owner)
    before = config_of(owner)
    with pytest.raises(services.InvalidInput):
        services.update_tunnel(tunnel, {"remote_host": "host -R 1:x:1"}, partial=True)
    assert config_of(owner) == before


def test_update_to_existing_config_is_refused(owner):
    first = make_tunnel(owner)
    second = make_tunnel(owner)
    with pytest.raises(services.DuplicateTunnel):
        services.update_tunnel(second, first.compat_dict())


def test_stop_is_remembered_across_config_changes(owner):
    tunnel = make_tunnel(owner)
    services.request_stop(tunnel)
    services.update_tunnel(tunnel, {"name": "renamed"}, partial=True)
    assert Tunnel.objects.get(pk=tunnel.pk).desired_state == Desired.STOPPED


def test_delete_backs_up_first(owner):
    tunnel = make_tunnel(owner)
    services.delete_tunnel(tunnel)
    assert not Tunnel.objects.exists()
    assert ConfigBackup.objects.first().tunnels[0]["hash"] == tunnel.hash


def test_restore_backup(owner):
    tunnel = make_tunnel(owner)
    services.delete_tunnel(tunnel)
    backup = ConfigBackup.objects.first()
    services.restore_backup(backup)
    assert Tunnel.objects.get().hash == tunnel.hash


def test_start_interactive_is_refused_where_nobody_can_answer(owner):
    tunnel = make_tunnel(owner, interactive=True)
    with pytest.raises(services.NotRunnable) as refused:
        services.request_start(tunnel, interactive_ok=False)
    assert f"/api/v1/tunnels/{tunnel.uuid}/prompt/" in str(refused.value)
    tunnel.refresh_from_db()
    assert tunnel.desired_state == "stopped"


def test_start_interactive_where_a_person_answers(owner):
    tunnel = make_tunnel(owner, interactive=True)
    services.request_start(tunnel)
    assert tunnel.desired_state == "running"


def test_start_all_skips_interactive(owner):
    plain = make_tunnel(owner)
    services.request_stop(plain)
    interactive = make_tunnel(owner, interactive=True)
    started, skipped = services.start_all(Tunnel.objects.owned_by(owner))
    assert [t.pk for t in started] == [plain.pk]
    assert [t.pk for t in skipped] == [interactive.pk]
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.STOPPED


def test_marker_moves_on_every_change(owner):
    before = services.marker_value()
    tunnel = make_tunnel(owner)
    services.request_stop(tunnel)
    assert services.marker_value() == before + 2


def test_resolve_prefix_errors(owner):
    tunnel = make_tunnel(owner)
    qs = Tunnel.objects.owned_by(owner)
    assert services.resolve_prefix(qs, tunnel.hash[:8]) == tunnel
    with pytest.raises(services.HashPrefixError, match=r"too short \(minimum 8 characters, got 7\)"):
        services.resolve_prefix(qs, tunnel.hash[:7])
    with pytest.raises(services.HashPrefixError) as info:
        services.resolve_prefix(qs, "00000000")
    assert info.value.status == 404


def test_quota_max_tunnels(owner):
    owner.max_tunnels = 1
    owner.save()
    make_tunnel(owner)
    with pytest.raises(services.QuotaExceeded, match="at most 1 tunnels"):
        make_tunnel(owner)
    assert Tunnel.objects.count() == 1


def test_quota_port_range_and_bind(owner, staff):
    with pytest.raises(services.QuotaExceeded, match="outside your allowed range 20000-29999"):
        make_tunnel(owner, local_port="80")
    with pytest.raises(services.QuotaExceeded, match="loopback"):
        make_tunnel(owner, local_port="0.0.0.0:18080")
    assert Tunnel.objects.count() == 0
    make_tunnel(staff, local_port="0.0.0.0:80")  # staff are exempt


def test_restore_keeps_ssh_port_and_auto_restart(owner):
    tunnel = make_tunnel(owner, ssh_port=2222, auto_restart=False)
    services.delete_tunnel(tunnel)
    services.restore_backup(ConfigBackup.objects.first())
    restored = Tunnel.objects.get()
    assert (restored.ssh_port, restored.auto_restart) == (2222, False)


def test_wait_for_outcome_reports_a_failure_the_worker_recorded_after_the_request(owner):
    tunnel = services.create_tunnel(owner, tunnel_data(), start=False)
    services.request_start(tunnel, services.Actor(owner))
    WorkerNode.objects.create(name="n", last_seen=timezone.now())
    Tunnel.objects.filter(pk=tunnel.pk).update(
        status=Status.FAILED, status_changed_at=timezone.now() + timedelta(seconds=1), last_error="boom"
    )
    outcome = services.wait_for_outcome(tunnel, want_running=True, timeout=0)
    assert outcome == services.Outcome("failed", "failed: boom")
    assert not outcome.done and not outcome.queued


def test_wait_for_outcome_without_a_worker_is_queued(owner):
    tunnel = services.create_tunnel(owner, tunnel_data(), start=False)
    services.request_start(tunnel, services.Actor(owner))
    outcome = services.wait_for_outcome(tunnel, want_running=True, timeout=0)
    assert outcome.queued and outcome.text == "queued: no worker is running"
