"""REST API v1: the login prompt of an interactive tunnel (GET/POST /api/v1/tunnels/{id}/prompt/), and
starts that carry their answers up front.

The worker's side is played by calling tunnels.prompts.begin/ask/take directly, as the worker does.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import pytest
import yaml
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import request_log
from accounts.models import ApiRequest
from tests.conftest import client_for
from tests.factories import make_tunnel, tunnel_data
from tests.secret_scan import find_secret
from tunnels import prompts, services
from tunnels.models import AuthPrompt, Desired, Status, Tunnel, WorkerNode

pytestmark = pytest.mark.django_db

SECRET = "correct horse battery staple 42"


def url(tunnel, suffix: str = "prompt/") -> str:
    return f"/api/v1/tunnels/{tunnel.uuid}/{suffix}"


def asking(tunnel, prompt: str = "alice@server's password:", echo: bool = False, attempt: str = "attempt1") -> None:
    """What the worker does when ssh asks: a new attempt, then the question."""
    prompts.begin(tunnel.pk, attempt)
    assert prompts.ask(tunnel.pk, attempt, prompt, echo) is None


@pytest.fixture
def live_worker_row():
    """A worker node that reported just now: a wait waits instead of answering "no worker"."""
    return WorkerNode.objects.create(name="node-1", last_seen=timezone.now())


@pytest.fixture
def interactive(owner):
    return make_tunnel(owner, interactive=True)


def leaks(data_dir) -> list[str]:
    """Every place the secret stands in a plain form: all tables, database files, data dir, processes."""
    return find_secret(SECRET, data_dir=data_dir)


# --- GET ----------------------------------------------------------------------


def test_nothing_pending_is_200_with_pending_false(interactive, owner_client):
    response = owner_client.get(url(interactive))
    assert response.status_code == 200
    assert response.json() == {
        "pending": False,
        "prompt": None,
        "echo": False,
        "expires_at": None,
        "seconds_left": None,
    }


def test_pending_prompt_is_shown_with_its_time_left(interactive, owner_client, settings):
    settings.PROMPT_TIMEOUT = 120
    asking(interactive, "Verification code:", echo=True)
    body = owner_client.get(url(interactive)).json()
    assert body["pending"] is True and body["prompt"] == "Verification code:" and body["echo"] is True
    assert 115 <= body["seconds_left"] <= 120
    assert body["expires_at"].endswith("Z")


def test_expired_prompt_is_not_pending(interactive, owner_client):
    prompts.begin(interactive.pk, "a")
    prompts.ask(interactive.pk, "a", "Password:", False, timeout=-1)
    assert owner_client.get(url(interactive)).json()["pending"] is False


def test_another_users_tunnel_is_404_for_get_and_post(interactive, other_client):
    asking(interactive)
    assert other_client.get(url(interactive)).status_code == 404
    response = other_client.post(url(interactive), {"answer": SECRET}, format="json")
    assert response.status_code == 404
    assert AuthPrompt.objects.get().answer == ""


def test_staff_acting_as_admin_sees_and_answers_anyones_prompt(interactive, staff_client):
    asking(interactive)
    assert staff_client.get(url(interactive)).json()["pending"] is True
    assert staff_client.post(url(interactive), {"answer": SECRET}, format="json").status_code == 202
    assert prompts.take(interactive.pk, "attempt1") == SECRET


# --- POST ---------------------------------------------------------------------


def test_answer_is_accepted_stored_encrypted_then_taken_once(interactive, owner_client, data_dir):
    asking(interactive)
    response = owner_client.post(url(interactive), {"answer": SECRET}, format="json")
    assert response.status_code == 202
    assert response.json() == {"accepted": True}
    row = AuthPrompt.objects.get()
    assert row.answer and SECRET not in row.answer  # sealed, not plain
    assert leaks(data_dir) == []
    assert owner_client.get(url(interactive)).json()["pending"] is False  # answered: nothing left to answer
    assert prompts.take(interactive.pk, "attempt1") == SECRET
    assert prompts.take(interactive.pk, "attempt1") is None
    assert AuthPrompt.objects.get().answer == ""


def test_answer_as_a_form_post_works_too(interactive, owner_client):
    asking(interactive)
    assert owner_client.post(url(interactive), {"answer": SECRET}).status_code == 202
    assert prompts.take(interactive.pk, "attempt1") == SECRET


def test_answer_urlencoded_as_the_readme_sends_it(interactive, owner_client):
    # curl --data-urlencode answer@- (README "Interactive tunnels")
    asking(interactive)
    body = urlencode({"answer": "p&ss=w rd+"})
    response = owner_client.post(url(interactive), body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202
    assert prompts.take(interactive.pk, "attempt1") == "p&ss=w rd+"


def test_nothing_pending_is_409_json_and_stores_nothing(interactive, owner_client):
    response = owner_client.post(url(interactive), {"answer": SECRET}, format="json")
    assert response.status_code == 409
    assert "not waiting for an answer" in response.json()["error"]
    assert SECRET not in response.content.decode()
    assert not AuthPrompt.objects.exists()


def test_second_answer_to_the_same_prompt_is_409(interactive, owner_client):
    asking(interactive)
    assert owner_client.post(url(interactive), {"answer": "first"}, format="json").status_code == 202
    assert owner_client.post(url(interactive), {"answer": "second"}, format="json").status_code == 409
    assert prompts.take(interactive.pk, "attempt1") == "first"


@pytest.mark.parametrize(
    "body",
    [
        {"answer": 1234},
        {"answer": None},
        {"answer": ["pw"]},
        {"answer": "a" * (prompts.MAX_ANSWER + 1)},
        {"answer": "line one\nline two"},
        {"answer": "carriage\rreturn"},
        {},
        {"reply": "pw"},
        ["pw"],
    ],
)
def test_bad_answer_is_400_naming_answer_and_changes_nothing(interactive, owner_client, body):
    asking(interactive)
    response = owner_client.post(url(interactive), body, format="json")
    assert response.status_code == 400, response.content
    assert "answer" in response.json()["error"]
    assert AuthPrompt.objects.get().answer == ""
    assert owner_client.get(url(interactive)).json()["pending"] is True


def test_read_only_token_may_look_but_not_answer(owner, interactive):
    asking(interactive)
    reader = client_for(owner, ["read"])
    assert reader.get(url(interactive)).json()["pending"] is True
    response = reader.post(url(interactive), {"answer": SECRET}, format="json")
    assert response.status_code == 403 and "operate" in response.json()["error"]
    assert AuthPrompt.objects.get().answer == ""


def test_operate_token_may_answer(owner, interactive):
    asking(interactive)
    assert client_for(owner, ["operate"]).post(url(interactive), {"answer": SECRET}, format="json").status_code == 202


def test_answer_never_in_request_history_or_logs(interactive, owner_client, caplog, data_dir):
    asking(interactive)
    with caplog.at_level(logging.DEBUG):
        owner_client.post(url(interactive), {"answer": SECRET}, format="json")
        owner_client.post(url(interactive), {"answer": SECRET + "\n"}, format="json")  # 400
        owner_client.post(url(interactive, "start/") + "?wait=0", {"responses": [SECRET]}, format="json")
    request_log.BACKLOG.flush()
    recorded = list(ApiRequest.objects.values())
    assert len(recorded) >= 3
    assert SECRET not in str(recorded)
    assert SECRET not in caplog.text
    assert leaks(data_dir) == []


# --- start with answers up front -----------------------------------------------


def test_start_of_an_interactive_tunnel_is_200_and_begins_a_login(interactive, owner_client):
    response = owner_client.post(url(interactive, "start/") + "?wait=0")
    assert response.status_code == 200, response.json()
    assert response.json()["desired_state"] == "running"
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.RUNNING


def test_start_with_responses_keeps_them_encrypted_for_ssh_in_order(interactive, owner_client, data_dir):
    response = owner_client.post(
        url(interactive, "start/") + "?wait=0", {"responses": [SECRET, "123456"]}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert SECRET not in response.content.decode()
    assert leaks(data_dir) == []
    prompts.begin(interactive.pk, "w1")
    assert prompts.ask(interactive.pk, "w1", "Password:", False) == SECRET
    assert prompts.ask(interactive.pk, "w1", "Verification code:", True) == "123456"
    assert prompts.ask(interactive.pk, "w1", "Anything else:", False) is None  # no more: asked of the user
    assert owner_client.get(url(interactive)).json()["prompt"] == "Anything else:"


@pytest.mark.parametrize(
    "body",
    [{"responses": "pw"}, {"responses": [1]}, {"responses": ["a\nb"]}, {"responses": ["x"] * 11}, ["pw"]],
)
def test_bad_responses_are_400_and_change_nothing(interactive, owner_client, body):
    response = owner_client.post(url(interactive, "start/") + "?wait=0", body, format="json")
    assert response.status_code == 400, response.content
    assert "responses" in response.json()["fields"]
    assert Tunnel.objects.get(pk=interactive.pk).desired_state == Desired.STOPPED
    assert not AuthPrompt.objects.exists()


def test_responses_for_a_key_tunnel_are_400(owner, owner_client):
    tunnel = services.create_tunnel(owner, tunnel_data(), start=False)
    response = owner_client.post(url(tunnel, "start/") + "?wait=0", {"responses": ["pw"]}, format="json")
    assert response.status_code == 400 and "responses" in response.json()["fields"]
    assert Tunnel.objects.get(pk=tunnel.pk).desired_state == Desired.STOPPED


def test_wait_ends_as_soon_as_a_prompt_is_pending(interactive, owner_client, live_worker_row):
    # The start forgets earlier prompts, so the worker's question comes after it.
    response = owner_client.post(url(interactive, "start/") + "?wait=0")
    assert response.status_code == 200
    asking(interactive, "Password:")
    outcome = services.wait_for_outcome(Tunnel.objects.get(pk=interactive.pk), True, 5)
    assert outcome.state == "prompt"
    assert outcome.text.startswith("needs answer: Password:")
    assert f"/api/v1/tunnels/{interactive.uuid}/prompt/" in outcome.text
    assert outcome.waited is True


def test_needs_auth_ends_a_wait_as_failed_with_its_reason(interactive, live_worker_row):
    services.request_start(interactive)
    Tunnel.objects.filter(pk=interactive.pk).update(
        status=Status.NEEDS_AUTH, status_changed_at=timezone.now(), last_error="ssh master ended: needs login"
    )
    outcome = services.wait_for_outcome(Tunnel.objects.get(pk=interactive.pk), True, 5)
    assert (outcome.state, outcome.text) == ("failed", "failed: ssh master ended: needs login")


# --- lists and details -----------------------------------------------------------


def test_prompt_pending_in_detail_and_list(owner, interactive, owner_client):
    quiet = make_tunnel(owner, interactive=True)
    plain = make_tunnel(owner)
    asking(interactive)
    detail = owner_client.get(url(interactive, "")).json()
    assert detail["prompt_pending"] is True
    assert owner_client.get(url(quiet, "")).json()["prompt_pending"] is False
    listed = {item["id"]: item["prompt_pending"] for item in owner_client.get("/api/v1/tunnels/").json()["entries"]}
    assert listed == {str(interactive.uuid): True, str(quiet.uuid): False, str(plain.uuid): False}


@pytest.mark.parametrize("count", [3, 40])
def test_list_with_pending_prompts_has_a_constant_query_count(owner, owner_client, django_assert_num_queries, count):
    for index in range(count):
        tunnel = make_tunnel(owner, interactive=True, name=f"i{index}")
        if index % 2:
            asking(tunnel, attempt=f"a{index}")
    owner_client.get("/api/v1/tunnels/")
    # token lookup, count, page, pending prompts of the page, request-history insert
    with django_assert_num_queries(5):
        body = owner_client.get("/api/v1/tunnels/", {"limit": 1000}).json()
    assert sum(item["prompt_pending"] for item in body["entries"]) == count // 2


def test_status_filter_accepts_needs_auth(owner, interactive, owner_client):
    Tunnel.objects.filter(pk=interactive.pk).update(status=Status.NEEDS_AUTH)
    make_tunnel(owner)
    body = owner_client.get("/api/v1/tunnels/", {"status": "needs_auth"}).json()
    assert [item["id"] for item in body["entries"]] == [str(interactive.uuid)]


# --- the schema ------------------------------------------------------------------


def test_schema_documents_the_prompt_endpoint_responses_and_needs_auth():
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    prompt = schema["paths"]["/api/v1/tunnels/{id}/prompt/"]
    assert set(prompt["get"]["responses"]) >= {"200", "404"}
    assert set(prompt["post"]["responses"]) >= {"202", "400", "404", "409"}
    answer_ref = prompt["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "answer" in schema["components"]["schemas"][answer_ref.rsplit("/", 1)[1]]["properties"]
    start = schema["paths"]["/api/v1/tunnels/{id}/start/"]["post"]
    start_ref = start["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "responses" in schema["components"]["schemas"][start_ref.rsplit("/", 1)[1]]["properties"]
    tunnel = schema["components"]["schemas"]["Tunnel"]["properties"]
    assert tunnel["prompt_pending"]["type"] == "boolean"
    status_ref = tunnel["status"].get("$ref") or tunnel["status"]["allOf"][0]["$ref"]
    assert "needs_auth" in schema["components"]["schemas"][status_ref.rsplit("/", 1)[1]]["enum"]
    filters = {p["name"]: p for p in schema["paths"]["/api/v1/tunnels/"]["get"]["parameters"]}
    assert "needs_auth" in filters["status"]["schema"]["enum"]
