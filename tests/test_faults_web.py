"""Every error on an API or compat path is JSON; the dashboard and admin keep HTML (tunnelsite.faults).

The errors here are raised on cue (a service function, a plain view, a middleware that raise);
``test_faults_sqlite_lock.py`` and ``test_faults_e2e.py`` make the database itself fail.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError
from rest_framework.test import APIClient

from accounts.models import ApiRequest
from tests import fault_urls
from tests.factories import make_tunnel
from tunnels import services
from tunnelsite import faults

pytestmark = pytest.mark.django_db

LEAKS = ("Traceback", ".py", "/work", "secret", "Server Error")


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into {text!r}"


def assert_db_503(response, retry_after: int = faults.RETRY_AFTER_DOWN) -> dict:
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == str(retry_after)
    body = response.json()
    assert body["retry_after"] == retry_after and (body.get("error") or body["message"])
    assert_no_leak(response.content.decode())
    return body


def assert_json_500(response) -> None:
    assert response.status_code == 500, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "internal error"}
    assert not response.has_header("Retry-After")


@pytest.fixture
def lenient(owner_client) -> APIClient:
    """Django's test client re-raises errors that reach handler500; a real server answers them."""
    owner_client.raise_request_exception = False
    return owner_client


def start_raising(monkeypatch, exc: Exception) -> None:
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(services, "request_start", fail)


# --- classification -------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "retry_after"),
    [
        (OperationalError("could not connect to server: Connection refused"), 503, faults.RETRY_AFTER_DOWN),
        (OperationalError("database is locked"), 503, faults.RETRY_AFTER_LOCKED),
        (OperationalError("database or disk is full"), 503, faults.RETRY_AFTER_DOWN),
        (InterfaceError("connection already closed"), 503, faults.RETRY_AFTER_DOWN),
        (sqlite3.OperationalError("database is locked"), 503, faults.RETRY_AFTER_LOCKED),  # a raw connection's
        (IntegrityError("UNIQUE constraint failed"), 500, None),  # a race or a bug, not an outage
        (RuntimeError("boom"), 500, None),
    ],
)
def test_fault_for_classifies_database_outages_apart_from_bugs(exc, status, retry_after):
    fault = faults.fault_for(exc)
    assert (fault.status, fault.retry_after) == (status, retry_after)


# --- DRF views (tunnelsite.api.exception_handler) ---------------------------


def test_database_error_in_a_rest_view_is_a_json_503(monkeypatch, owner, owner_client):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, OperationalError(fault_urls.DATABASE_DOWN))
    response = owner_client.post(f"/api/v1/tunnels/{tunnel.uuid}/start/?wait=0")
    assert assert_db_503(response)["error"] == "database unavailable; try again"


def test_locked_database_in_a_rest_view_says_busy_with_a_short_retry(monkeypatch, owner, owner_client):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, OperationalError("database is locked"))
    response = owner_client.post(f"/api/v1/tunnels/{tunnel.uuid}/start/?wait=0")
    assert "busy" in assert_db_503(response, faults.RETRY_AFTER_LOCKED)["error"]


def test_unexpected_error_in_a_rest_view_is_a_json_500_without_traceback(monkeypatch, owner, lenient, caplog):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, RuntimeError(fault_urls.BUG))
    response = lenient.post(f"/api/v1/tunnels/{tunnel.uuid}/start/?wait=0")
    assert_json_500(response)
    assert fault_urls.BUG in caplog.text  # the operator's log has it, the client does not


def test_compat_view_errors_are_json_with_cors(monkeypatch, owner, lenient):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, OperationalError(fault_urls.DATABASE_DOWN))
    for mount in ("", "/api/autossh"):
        response = lenient.post(f"{mount}/start/{tunnel.hash[:8]}?wait=0")
        assert_db_503(response)
        assert response["Access-Control-Allow-Origin"] == "*"
    start_raising(monkeypatch, RuntimeError(fault_urls.BUG))
    response = lenient.post(f"/start/{tunnel.hash[:8]}?wait=0")
    assert_json_500(response)
    assert response["Access-Control-Allow-Origin"] == "*"


def test_calls_keep_their_envelope_for_database_errors(monkeypatch, owner, owner_client):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, OperationalError(fault_urls.DATABASE_DOWN))
    response = owner_client.get(f"/api/v1/calls/connect?tunnel={tunnel.hash[:8]}&wait=0")
    assert response.status_code == 503 and response["Retry-After"] == str(faults.RETRY_AFTER_DOWN)
    assert response.json() == {
        "message": "database unavailable; try again",
        "error_code": faults.CALLS_SERVER_ERROR,
        "success": False,
        "retry_after": faults.RETRY_AFTER_DOWN,
    }


def test_calls_keep_their_envelope_for_bugs(monkeypatch, owner, lenient):
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, RuntimeError(fault_urls.BUG))
    response = lenient.get(f"/api/v1/calls/connect?tunnel={tunnel.hash[:8]}&wait=0")
    assert response.status_code == 500
    assert response.json() == {"message": "internal error", "error_code": faults.CALLS_SERVER_ERROR, "success": False}


# --- plain Django views (FaultMiddleware.process_exception) -----------------


@pytest.mark.urls("tests.fault_urls")
def test_plain_view_errors_on_api_paths_are_json(lenient):
    assert_db_503(lenient.get("/api/v1/test-faults/database"))
    assert_json_500(lenient.get("/api/v1/test-faults/bug"))
    compat = lenient.get("/list/test-faults/database")
    assert_db_503(compat)
    assert compat["Access-Control-Allow-Origin"] == "*"
    calls = lenient.get("/api/v1/calls/test-faults-bug")
    assert calls.status_code == 500 and calls.json()["error_code"] == faults.CALLS_SERVER_ERROR


@pytest.mark.urls("tests.fault_urls")
def test_plain_view_errors_on_dashboard_paths_stay_html(client):
    client.raise_request_exception = False
    down = client.get("/test-faults/database")
    assert down.status_code == 503 and down["Content-Type"].startswith("text/html")
    assert "Service unavailable" in down.content.decode() and down["Retry-After"]
    assert_no_leak(down.content.decode())
    bug = client.get("/test-faults/bug")
    assert bug.status_code == 500 and bug["Content-Type"].startswith("text/html")
    assert fault_urls.BUG not in bug.content.decode()


# --- errors raised in middleware (handler500) -------------------------------


@pytest.fixture
def raising_middleware(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.fault_urls.RaiseWhenAsked"]


@pytest.mark.usefixtures("raising_middleware")
@pytest.mark.parametrize("path", ["/api/v1/tunnels/", "/list", "/api/autossh/status", "/api/v1/calls/client_status"])
def test_middleware_errors_on_api_paths_are_json(lenient, path):
    response = lenient.get(path, HTTP_X_TEST_FAULT="database")
    assert_db_503(response, faults.RETRY_AFTER_LOCKED)
    response = lenient.get(path, HTTP_X_TEST_FAULT="bug")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert_no_leak(response.content.decode())


@pytest.mark.usefixtures("raising_middleware")
def test_middleware_errors_on_admin_and_dashboard_stay_html(client):
    client.raise_request_exception = False
    for path in ("/admin/", "/"):
        down = client.get(path, HTTP_X_TEST_FAULT="database")
        assert down.status_code == 503 and down["Content-Type"].startswith("text/html"), path
        bug = client.get(path, HTTP_X_TEST_FAULT="bug")
        assert bug.status_code == 500 and bug["Content-Type"].startswith("text/html"), path


@pytest.mark.usefixtures("raising_middleware")
def test_request_history_records_what_the_client_got(lenient, owner):
    lenient.get("/api/v1/tunnels/", HTTP_X_TEST_FAULT="database")
    lenient.get("/api/v1/tunnels/", HTTP_X_TEST_FAULT="bug")
    assert list(ApiRequest.objects.order_by("created_at").values_list("path", "status")) == [
        ("/api/v1/tunnels/", 503),
        ("/api/v1/tunnels/", 500),
    ]


def test_handler500_is_the_projects():
    from tunnelsite import urls

    assert urls.handler500 == "tunnelsite.faults.server_error"


def test_json_bodies_are_json(monkeypatch, owner, lenient):
    """The 500 body is parseable JSON even for a client that ignores Content-Type."""
    tunnel = make_tunnel(owner)
    start_raising(monkeypatch, RuntimeError(fault_urls.BUG))
    response = lenient.post(f"/api/v1/tunnels/{tunnel.uuid}/start/?wait=0")
    assert json.loads(response.content) == {"error": "internal error"}
