"""Interactive tunnels on the surfaces without a person to answer a prompt: the compat API (/status,
/start/<hash>, /start) and the sshreach-style calls (client_status, connect)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.factories import make_tunnel
from tunnels import prompts, services
from tunnels.models import AuthPrompt, Desired, Status, Tunnel

pytestmark = pytest.mark.django_db

MOUNTS = ["", "/api/autossh"]


def needs_auth(tunnel: Tunnel) -> Tunnel:
    """What the worker writes when an interactive tunnel's ssh master ends."""
    Tunnel.objects.filter(pk=tunnel.pk).update(
        status=Status.NEEDS_AUTH,
        desired_state=Desired.STOPPED,
        status_changed_at=timezone.now(),
        last_error="ssh master ended; start it again and log in",
    )
    tunnel.refresh_from_db()
    return tunnel


@pytest.fixture
def interactive(owner):
    return make_tunnel(owner, interactive=True)


@pytest.mark.parametrize("mount", MOUNTS)
def test_status_says_dead_for_needs_auth_and_list_says_interactive(mount, owner, owner_client, interactive):
    needs_auth(interactive)
    plain = make_tunnel(owner)
    status = {item["hash"]: item["status"] for item in owner_client.get(f"{mount}/status").json()}
    assert status == {interactive.hash: "DEAD", plain.hash: "STOPPED"}
    listed = {item["hash"]: item["status"] for item in owner_client.get(f"{mount}/list").json()}
    assert listed == {interactive.hash: "INTERACTIVE", plain.hash: "NORMAL"}
    # The REST API keeps tunnelsite's own word and the reason.
    rest = owner_client.get(f"/api/v1/tunnels/{interactive.uuid}/").json()
    assert (rest["status"], rest["last_error"]) == ("needs_auth", "ssh master ended; start it again and log in")


@pytest.mark.parametrize("mount", MOUNTS)
def test_start_one_interactive_is_409_saying_where_to_answer_and_changes_nothing(mount, owner_client, interactive):
    prompts.begin(interactive.pk, "old")  # an earlier login's row: a refused start must not touch it
    response = owner_client.post(f"{mount}/start/{interactive.hash[:10]}")
    assert response.status_code == 409
    message = response.json()["error"]
    assert message == services.INTERACTIVE_ELSEWHERE.format(name=interactive.name, id=interactive.uuid)
    assert f"/api/v1/tunnels/{interactive.uuid}/prompt/" in message and f"/tunnels/{interactive.uuid}/" in message
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.STOPPED
    assert AuthPrompt.objects.get().attempt == "old"


@pytest.mark.parametrize("mount", MOUNTS)
def test_start_all_skips_a_needs_auth_tunnel(mount, owner_client, interactive):
    needs_auth(interactive)
    output = owner_client.post(f"{mount}/start?wait=0").json()["output"]
    assert f"skipped (interactive, needs interactive authentication): {interactive.name}" in output
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.STOPPED


def test_stop_one_of_a_needs_auth_tunnel_says_stopped_in_its_words(owner_client, interactive):
    needs_auth(interactive)
    response = owner_client.post(f"/stop/{interactive.hash}?wait=0")
    assert response.status_code == 200
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.STOPPED


def test_client_status_of_needs_auth_is_offline_24(owner_client, interactive):
    needs_auth(interactive)
    response = owner_client.get(f"/api/v1/calls/client_status?tunnel={interactive.hash}")
    assert response.status_code == 200
    assert response.json() == {"message": "offline", "error_code": 24, "success": True}


def test_client_status_of_a_running_interactive_tunnel_is_online(owner_client, interactive):
    Tunnel.objects.filter(pk=interactive.pk).update(status=Status.RUNNING, pid=4242)
    body = owner_client.get(f"/api/v1/calls/client_status?tunnel={interactive.uuid}").json()
    assert body == {"message": "online", "error_code": 0, "success": True}


def test_connect_of_a_needs_auth_tunnel_is_11_saying_where_to_answer(owner_client, interactive):
    needs_auth(interactive)
    response = owner_client.post(f"/api/v1/calls/connect?tunnel={interactive.hash}")
    assert response.status_code == 409
    body = response.json()
    assert (body["error_code"], body["success"]) == (11, False)
    assert body["message"].startswith("not connected: tunnel ") and "/prompt/" in body["message"]
    assert Tunnel.objects.get(pk=interactive.pk).status == Status.NEEDS_AUTH
