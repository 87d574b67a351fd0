"""Compat API, control: POST /start, /stop, /start/<h>, /stop/<h> (without a worker; see test_compat_e2e)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import client_for
from tests.factories import make_tunnel
from tunnels.models import Desired, Status, Tunnel, WorkerNode

pytestmark = pytest.mark.django_db

MOUNTS = ["", "/api/autossh"]


def stopped_tunnel(owner, **kw) -> Tunnel:
    tunnel = make_tunnel(owner, **kw)
    Tunnel.objects.filter(pk=tunnel.pk).update(desired_state=Desired.STOPPED)
    tunnel.refresh_from_db()
    return tunnel


def live_worker() -> WorkerNode:
    return WorkerNode.objects.create(name="node-1", last_seen=timezone.now())


@pytest.mark.parametrize("mount", MOUNTS)
def test_start_one_sets_desired_and_says_no_worker(mount, owner, owner_client):
    tunnel = stopped_tunnel(owner)
    response = owner_client.post(f"{mount}/start/{tunnel.hash[:8]}")
    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "tunnel_hash": tunnel.hash,
        "output": f"Starting tunnel: {tunnel.name} ({tunnel.hash})\nqueued: no worker is running",
    }
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.RUNNING and tunnel.desired_by == owner


@pytest.mark.parametrize("mount", MOUNTS)
def test_stop_one_sets_desired(mount, owner, owner_client):
    tunnel = make_tunnel(owner)
    response = owner_client.post(f"{mount}/stop/{tunnel.hash}?wait=0")
    assert response.status_code == 200
    body = response.json()
    assert body["tunnel_hash"] == tunnel.hash and body["status"] == "success"
    # Never started, so it is already stopped: the truthful outcome.
    assert body["output"] == f"Stopping tunnel: {tunnel.name} ({tunnel.hash})\nstopped"
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_start_with_live_worker_and_wait_0_says_not_confirmed(owner, owner_client):
    live_worker()
    tunnel = stopped_tunnel(owner)
    output = owner_client.post(f"/start/{tunnel.hash}?wait=0").json()["output"]
    assert output.endswith("queued: starting, worker has not confirmed yet (status stopped)")


def test_start_of_running_tunnel_reports_its_pid(owner, owner_client):
    tunnel = make_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(status=Status.RUNNING, pid=4242, running_generation=tunnel.generation)
    assert owner_client.post(f"/start/{tunnel.hash}").json()["output"].endswith("\nstarted, pid 4242")


def test_failed_start_output_is_plain_text(owner, owner_client):
    live_worker()
    tunnel = stopped_tunnel(owner)
    Tunnel.objects.filter(pk=tunnel.pk).update(
        status=Status.FAILED,
        status_changed_at=timezone.now() + timedelta(hours=1),
        last_error="\x1b[31mremote port forwarding failed\x1b[0m\x07",
    )
    output = owner_client.post(f"/start/{tunnel.hash}?wait=1").json()["output"]
    assert output.endswith("\nfailed: remote port forwarding failed")
    assert "\x1b" not in output and "\x07" not in output


@pytest.mark.parametrize("wait", ["abc", "-1", "nan", "inf", "99999"])
def test_bad_wait_is_400_and_changes_nothing(wait, owner, owner_client):
    tunnel = stopped_tunnel(owner)
    response = owner_client.post(f"/start/{tunnel.hash}?wait={wait}")
    assert response.status_code == 400 and response.json()["error"].startswith("wait:")
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


def test_long_wait_is_accepted_and_returns_at_once_without_a_worker(owner, owner_client):
    tunnel = stopped_tunnel(owner)
    response = owner_client.post(f"/start/{tunnel.hash}?wait=100")
    assert response.status_code == 200 and response.json()["output"].endswith("queued: no worker is running")


def test_start_interactive_tunnel_is_409_and_stays_stopped(owner, owner_client):
    tunnel = make_tunnel(owner, interactive=True)
    response = owner_client.post(f"/start/{tunnel.hash}")
    assert response.status_code == 409
    assert "interactive" in response.json()["error"] and set(response.json()) == {"error"}
    assert f"/api/v1/tunnels/{tunnel.uuid}/prompt/" in response.json()["error"]  # where to start it instead
    tunnel.refresh_from_db()
    assert tunnel.desired_state == Desired.STOPPED


@pytest.mark.parametrize("mount", MOUNTS)
def test_start_all_skips_interactive_and_says_so(mount, owner, other, owner_client):
    normal = stopped_tunnel(owner)
    interactive = make_tunnel(owner, interactive=True)
    theirs = stopped_tunnel(other)
    response = owner_client.post(f"{mount}/start")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "output"} and body["status"] == "success"
    assert body["output"].splitlines() == [
        "Starting 1 tunnel(s)",
        f"{normal.name} ({normal.hash}): queued: no worker is running",
        f"skipped (interactive, needs interactive authentication): {interactive.name} ({interactive.hash})",
    ]
    states = dict(Tunnel.objects.values_list("pk", "desired_state"))
    assert states == {normal.pk: Desired.RUNNING, interactive.pk: Desired.STOPPED, theirs.pk: Desired.STOPPED}


@pytest.mark.parametrize("mount", MOUNTS)
def test_stop_all_stops_only_the_callers_tunnels(mount, owner, other, owner_client):
    mine = [make_tunnel(owner), make_tunnel(owner)]
    theirs = make_tunnel(other)
    live_worker()
    body = owner_client.post(f"{mount}/stop").json()
    assert body["status"] == "success"
    # Never started, so already stopped: the truthful outcome at once, whatever `wait` says.
    assert body["output"].splitlines() == ["Stopping 2 tunnel(s)", *(f"{t.name} ({t.hash}): stopped" for t in mine)]
    assert {t.pk for t in Tunnel.objects.filter(desired_state=Desired.STOPPED)} == {t.pk for t in mine}
    assert Tunnel.objects.get(pk=theirs.pk).desired_state == Desired.RUNNING


def test_start_all_with_live_worker_and_wait_0_says_not_confirmed(owner, owner_client):
    live_worker()
    tunnel = stopped_tunnel(owner)
    lines = owner_client.post("/start?wait=0").json()["output"].splitlines()
    assert lines == [
        "Starting 1 tunnel(s)",
        f"{tunnel.name} ({tunnel.hash}): queued: starting, worker has not confirmed yet (status stopped)",
    ]


def test_start_all_reports_each_tunnels_outcome(owner, owner_client):
    live_worker()
    running, failed = stopped_tunnel(owner), stopped_tunnel(owner)
    Tunnel.objects.filter(pk=running.pk).update(status=Status.RUNNING, pid=4242, running_generation=running.generation)
    Tunnel.objects.filter(pk=failed.pk).update(
        status=Status.FAILED, status_changed_at=timezone.now() + timedelta(hours=1), last_error="connection refused"
    )
    lines = owner_client.post("/start?wait=1").json()["output"].splitlines()
    assert lines == [
        "Starting 2 tunnel(s)",
        f"{running.name} ({running.hash}): started, pid 4242",
        f"{failed.name} ({failed.hash}): failed: connection refused",
    ]


@pytest.mark.parametrize("path", ["/start", "/stop"])
@pytest.mark.parametrize("wait", ["abc", "-1", "99999"])
def test_bad_wait_on_start_all_and_stop_all_is_400_and_changes_nothing(path, wait, owner, owner_client):
    stopped, running = stopped_tunnel(owner), make_tunnel(owner)
    response = owner_client.post(f"{path}?wait={wait}")
    assert response.status_code == 400 and response.json()["error"].startswith("wait:")
    states = dict(Tunnel.objects.values_list("pk", "desired_state"))
    assert states == {stopped.pk: Desired.STOPPED, running.pk: Desired.RUNNING}


def test_start_all_with_no_tunnels(owner_client):
    assert owner_client.post("/start").json() == {"status": "success", "output": "Starting 0 tunnel(s)"}


@pytest.mark.parametrize("path", ["/start", "/stop", "/start/{h}", "/stop/{h}"])
def test_control_needs_operate_scope(path, owner):
    tunnel = stopped_tunnel(owner)
    read_write = client_for(owner, ["read", "write"])
    response = read_write.post(path.format(h=tunnel.hash))
    assert response.status_code == 403 and "'operate'" in response.json()["error"]
    operate_only = client_for(owner, ["operate"])
    assert operate_only.post(path.format(h=tunnel.hash) + "?wait=0").status_code == 200


def test_config_changes_need_write_scope_and_reads_need_read(owner):
    tunnel = make_tunnel(owner)
    operate = client_for(owner, ["operate"])
    assert operate.get("/list").status_code == 403
    assert operate.delete(f"/config/{tunnel.hash}").status_code == 403
    assert operate.post("/config", {"tunnels": []}, format="json").status_code == 403
    read = client_for(owner, ["read"])
    assert read.get("/config").status_code == 200
    assert read.post(f"/delete/{tunnel.hash}").status_code == 403
    assert Tunnel.objects.filter(pk=tunnel.pk).exists()
