"""Request history: the middleware's rows and /api/v1/requests/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiRequest
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
URL = "/api/v1/requests/"
ME = "/api/v1/users/me/"


def test_success_is_recorded_with_user_token_and_client_details(owner):
    client = client_for(owner)
    client.get(ME, {"q": "1"}, HTTP_USER_AGENT="curl/8.0")
    row = ApiRequest.objects.get()
    assert (row.user, row.method, row.path, row.status) == (owner, "GET", ME, 200)
    assert row.auth_method == "token" and row.token_label == "test" and row.token_id is not None
    assert row.client_address == "127.0.0.1" and row.user_agent == "curl/8.0"
    assert row.duration_ms > 0


def test_failure_is_recorded_without_the_credential_or_query_string():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer tsk_AAAAAAAAAAAA_supersecretvalue")
    client.get(ME, {"api_key": "leaky"})
    row = ApiRequest.objects.get()
    assert row.status == 401 and row.user is None and row.path == ME
    stored = " ".join(str(value) for value in ApiRequest.objects.values().get().values())
    assert "supersecretvalue" not in stored and "leaky" not in stored


def test_request_body_is_never_stored(owner):
    client_for(owner).post("/api/v1/tokens/", {"label": "body-marker-xyz"}, format="json")
    stored = " ".join(str(value) for value in ApiRequest.objects.values().get().values())
    assert "body-marker-xyz" not in stored


@pytest.mark.parametrize(
    "path", ["/list", "/status", "/start/abcdef12", "/config", "/logs/abcdef12", "/api/autossh/list"]
)
def test_compat_paths_are_recorded(owner, path):
    client_for(owner).get(path)
    assert ApiRequest.objects.filter(path=path).count() == 1


@pytest.mark.parametrize("path", ["/admin/login/", "/static/x.css", "/listing", "/"])
def test_other_paths_are_not_recorded(path):
    APIClient().get(path)
    assert not ApiRequest.objects.exists()


def test_recording_costs_exactly_one_insert(owner):
    client = client_for(owner)
    client.get(ME)  # first use writes last_used_at
    with CaptureQueriesContext(connection) as queries:
        client.get(ME)
    history = [q["sql"] for q in queries if "accounts_apirequest" in q["sql"]]
    assert len(history) == 1 and history[0].startswith("INSERT")


def test_anonymous_request_is_recorded_without_session_queries():
    with CaptureQueriesContext(connection) as queries:
        APIClient().get(ME)
    assert len(queries) == 1  # only the history INSERT


def test_list_is_paginated_newest_first_and_scoped(owner, other):
    alice, bob = client_for(owner), client_for(other)
    for _ in range(3):
        alice.get(ME)
    bob.get(ME)
    body = alice.get(URL, {"limit": 2}).json()
    assert body["total"] == 3  # bob's request and this one's own row (written after the response) are not counted
    assert len(body["entries"]) == 2
    assert {entry["user"] for entry in alice.get(URL).json()["entries"]} == {"alice"}
    assert {entry["user"] for entry in bob.get(URL).json()["entries"]} == {"bob"}
    second_page = alice.get(URL, {"limit": 2, "offset": 2}).json()["entries"]
    assert len(second_page) == 2


def test_filters_by_method_status_path_and_since(owner):
    client = client_for(owner)
    client.get(ME)
    client.post("/api/v1/tokens/", {}, format="json")  # 400
    client.get("/api/v1/tokens/")
    assert {e["method"] for e in client.get(URL, {"method": "post"}).json()["entries"]} == {"POST"}
    assert [e["status"] for e in client.get(URL, {"status": 400}).json()["entries"]] == [400]
    assert {e["path"] for e in client.get(URL, {"path": "/api/v1/tokens"}).json()["entries"]} == {"/api/v1/tokens/"}
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert client.get(URL, {"since": future}).json() == {"total": 0, "entries": []}
    assert client.get(URL, {"since": "yesterday"}).status_code == 400
    assert client.get(URL, {"status": "abc"}).status_code == 400


@pytest.mark.parametrize("value", ["\u00b2", "\u0664\u0660\u0664", "\uff14\uff10\uff14", "4\u20820"])
def test_non_ascii_digits_in_status_are_400_naming_status(owner, value):
    # str.isdigit() is true for "²" and Arabic-Indic "٤٠٤"; int() then fails or reads them as 404.
    response = client_for(owner).get(URL, {"status": value})
    assert response.status_code == 400
    assert "status" in response.json()["fields"]


def test_staff_sees_everyones_history_and_filters_by_user(owner, other, staff_client):
    client_for(owner).get(ME)
    client_for(other).get(ME)
    users = {e["user"] for e in staff_client.get(URL).json()["entries"]}
    assert {"alice", "bob"} <= users
    assert {e["user"] for e in staff_client.get(URL, {"user": "bob"}).json()["entries"]} == {"bob"}


def test_list_query_count_is_constant(owner, django_assert_num_queries):
    client = client_for(owner)
    for _ in range(10):
        client.get(ME)
    # auth lookup, count, page (users joined), history insert
    with django_assert_num_queries(4):
        assert len(client.get(URL).json()["entries"]) == 10


def test_health_check_is_not_recorded(client):
    client.get("/api/v1/status")
    assert not ApiRequest.objects.filter(path__startswith="/api/v1/status").exists()


def test_filters_by_path_contains_and_until(owner):
    client = client_for(owner)
    client.get("/api/v1/tokens/")
    client.get(ME)
    old = ApiRequest.objects.create(user=owner, method="GET", path="/api/v1/tunnels/", status=200, duration_ms=1)
    ApiRequest.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    paths = {e["path"] for e in client.get(URL, {"path_contains": "TOKENS"}).json()["entries"]}
    assert paths == {"/api/v1/tokens/"}
    two_days_ago = (timezone.now() - timedelta(days=2)).date().isoformat()
    assert [e["path"] for e in client.get(URL, {"until": two_days_ago}).json()["entries"]] == ["/api/v1/tunnels/"]
    response = client.get(URL, {"until": "soon"})
    assert response.status_code == 400 and "until" in response.json()["fields"]
