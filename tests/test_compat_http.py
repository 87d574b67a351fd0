"""Compat API, HTTP surface: authentication, 401/404/405 bodies, missing hash, CORS, sessions, history, routing."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import ApiRequest, ApiToken
from tests.factories import make_tunnel
from tunnels.models import Tunnel

pytestmark = pytest.mark.django_db

UNAUTHORIZED = {"error": "Unauthorized", "message": "Valid Bearer token required"}
# Every route and method of the seed, with the status an authenticated caller gets on an empty account.
ROUTES = [
    ("get", "/list"),
    ("get", "/status"),
    ("post", "/start"),
    ("post", "/stop"),
    ("post", "/start/{h}"),
    ("post", "/stop/{h}"),
    ("post", "/edit"),
    ("delete", "/delete/{h}"),
    ("post", "/delete/{h}"),
    ("get", "/config"),
    ("post", "/config"),
    ("put", "/config"),
    ("post", "/config/new"),
    ("get", "/config/{h}"),
    ("post", "/config/{h}"),
    ("put", "/config/{h}"),
    ("delete", "/config/{h}"),
    ("post", "/config/{h}/delete"),
    ("get", "/logs"),
    ("get", "/logs/{h}"),
]
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
}


@pytest.fixture
def legacy(settings, django_user_model):
    settings.API_KEYS = ["your-secret-key", "key2"]
    settings.API_KEY_USER = "legacyadmin"
    return django_user_model.objects.create_user("legacyadmin", password="x-pass-123456")


# --- authentication -------------------------------------------------------


@pytest.mark.parametrize("mount", ["", "/api/autossh"])
@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_no_credentials_is_401_with_the_originals_body(mount, method, route, owner):
    tunnel = make_tunnel(owner)
    response = getattr(APIClient(), method)(mount + route.format(h=tunnel.hash))
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert response["WWW-Authenticate"] == "Bearer"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert Tunnel.objects.filter(pk=tunnel.pk, desired_state=tunnel.desired_state).exists()


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-key", "Bearer tsk_bogus_token", "Token tsk_bogus_token", "Basic dXNlcjpwYXNz", "Bearer", "junk"],
)
def test_bad_credentials_are_401_with_the_originals_body(header, legacy):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    for path in ("/list", "/api/autossh/config"):
        response = client.get(path)
        assert response.status_code == 401, header
        assert response.json() == UNAUTHORIZED and response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("mount", ["", "/api/autossh"])
def test_only_bearer_is_accepted_on_compat_paths(mount, owner, owner_client):
    """The original knew ``Bearer`` only: a valid token under any other scheme is its 401 there."""
    tunnel = make_tunnel(owner)
    assert owner_client.get(f"{mount}/list").json()[0]["hash"] == tunnel.hash
    token_client = APIClient()
    token_client.credentials(HTTP_AUTHORIZATION=f"Token {owner_client.raw_token}")
    for method, route in ROUTES:
        response = getattr(token_client, method)(mount + route.format(h=tunnel.hash))
        assert response.status_code == 401, (method, route)
        assert response.json() == UNAUTHORIZED and response["WWW-Authenticate"] == "Bearer"
    assert Tunnel.objects.filter(pk=tunnel.pk, desired_state=tunnel.desired_state).exists()
    # The REST API keeps accepting the same token as ``Token`` (JumpServer style).
    assert token_client.get("/api/v1/tunnels/").json()["entries"][0]["hash"] == tunnel.hash


def test_every_legacy_key_acts_as_the_configured_user(legacy, owner):
    mine = make_tunnel(legacy)
    make_tunnel(owner)
    for key in ("your-secret-key", "key2"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert [t["hash"] for t in client.get("/list").json()] == [mine.hash]


def test_no_anonymous_access_even_without_api_keys(settings, owner):
    settings.API_KEYS = []
    make_tunnel(owner)
    assert APIClient().get("/list").status_code == 401


def test_revoked_token_is_401(owner, owner_client):
    from django.utils import timezone

    ApiToken.objects.filter(user=owner).update(revoked_at=timezone.now())
    response = owner_client.get("/list")
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


# --- session (browser) ----------------------------------------------------


def test_session_works_and_unsafe_methods_need_csrf(owner):
    tunnel = make_tunnel(owner)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.get("/api/autossh/list").json()[0]["hash"] == tunnel.hash
    response = client.post(f"/api/autossh/delete/{tunnel.hash}")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert Tunnel.objects.filter(pk=tunnel.pk).exists()


# --- 404 / 405 / missing hash ---------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/nonexistent", "/api/autossh/nonexistent", "/list/", "/config/abc12345/extra", "/logs/a/b", "/api/autossh/"],
)
def test_unknown_path_is_json_404(path, owner_client):
    response = owner_client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_admin_keeps_html_404_and_routes_still_work(owner_client, staff):
    admin = APIClient()
    admin.force_login(staff)
    response = admin.get("/admin/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    assert admin.get("/admin/").status_code == 200
    assert APIClient().get("/admin").status_code == 301  # APPEND_SLASH still redirects
    assert owner_client.get("/api/v1/tunnels/").status_code == 200
    assert APIClient().get("/api/v1/status").status_code in (200, 503)  # 503: no worker here


WRONG_METHODS = [
    ("post", "/list"),
    ("delete", "/status"),
    ("get", "/start"),
    ("get", "/stop"),
    ("get", "/start/{h}"),
    ("put", "/stop/{h}"),
    ("get", "/edit"),
    ("get", "/delete/{h}"),
    ("delete", "/config"),
    ("get", "/config/new"),
    ("patch", "/config/{h}"),
    ("get", "/config/{h}/delete"),
    ("post", "/logs"),
    ("delete", "/logs/{h}"),
    ("get", "/start/"),
]


@pytest.mark.parametrize(("method", "route"), WRONG_METHODS)
def test_wrong_method_is_405(method, route, owner, owner_client):
    tunnel = make_tunnel(owner)
    response = getattr(owner_client, method)(route.format(h=tunnel.hash))
    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed"}
    assert Tunnel.objects.filter(pk=tunnel.pk, hash=tunnel.hash).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/start/"),
        ("post", "/stop/"),
        ("post", "/delete/"),
        ("delete", "/delete/"),
        ("get", "/logs/"),
        ("get", "/config/"),
        ("delete", "/config/"),
        ("post", "/config//delete"),
        ("post", "/api/autossh/start/"),
    ],
)
def test_missing_hash_is_400(method, path, owner_client):
    response = getattr(owner_client, method)(path)
    assert response.status_code == 400
    assert response.json() == {"error": "Tunnel hash required"}


def test_missing_hash_still_needs_credentials():
    response = APIClient().post("/start/")
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


# --- CORS -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/list", "/api/autossh/status", "/config/new", "/start/12345678"])
def test_options_is_204_with_cors_and_no_credentials(path):
    response = APIClient().options(path, HTTP_ORIGIN="http://panel.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 204
    assert response.content == b""
    for header, value in CORS.items():
        assert response[header] == value


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/list"), ("post", "/config"), ("get", "/config/x/y"), ("get", "/api/autossh/nope")]
)
def test_cors_headers_on_answers_and_errors(method, path, owner_client):
    response = getattr(owner_client, method)(path)
    for header, value in CORS.items():
        assert response[header] == value, (path, response.status_code)


def test_cors_can_be_turned_off(settings, owner_client):
    settings.COMPAT_CORS = False
    assert "Access-Control-Allow-Origin" not in owner_client.get("/list")
    options = APIClient().options("/list")
    assert options.status_code == 204 and "Access-Control-Allow-Origin" not in options


def test_cors_is_not_added_to_the_rest_api(owner_client):
    assert "Access-Control-Allow-Origin" not in owner_client.get("/api/v1/tunnels/")


# --- JSON whatever the client asks for ------------------------------------


def test_answers_json_even_to_a_browser_accept_header(owner, owner_client):
    make_tunnel(owner)
    response = owner_client.get("/list", HTTP_ACCEPT="text/html")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")


# --- request history ------------------------------------------------------


@pytest.mark.parametrize("path", ["/list", "/api/autossh/config"])
def test_compat_requests_land_in_the_request_history(path, owner, owner_client):
    owner_client.get(path)
    APIClient().get(path)
    rows = list(ApiRequest.objects.filter(path=path).order_by("created_at", "id"))
    assert [(r.method, r.status, r.user_id, r.auth_method) for r in rows] == [
        ("GET", 200, owner.pk, "token"),
        ("GET", 401, None, ""),
    ]


# --- OpenAPI --------------------------------------------------------------


def test_schema_documents_each_compat_operation_once_under_api_autossh(tmp_path):
    target = tmp_path / "schema.yml"
    err = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stderr=err)
    schema = yaml.safe_load(target.read_text())
    compat = {path: ops for path, ops in schema["paths"].items() if "autossh-compat" in str(ops)}
    assert all(path.startswith("/api/autossh/") for path in compat)
    operations = {(path, method) for path, ops in compat.items() for method in ops}
    expected = {("/api/autossh" + route.replace("{h}", "{prefix}"), method) for method, route in ROUTES}
    assert operations == expected
    assert schema["paths"]["/api/autossh/list"]["get"]["responses"]["401"]
