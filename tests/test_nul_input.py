"""NUL characters are never valid input (PostgreSQL text cannot even store them)."""

from __future__ import annotations

import json

import pytest

from accounts.models import ApiRequest, ApiToken
from tests.factories import make_tunnel, tunnel_data
from tunnels.models import Tunnel

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    ["/api/v1/tunnels/?direction=%00", "/api/v1/history/?direction=a%00b", "/list?x=%00", "/api/v1/requests/?path=%00"],
)
def test_nul_in_query_is_400(owner_client, owner, url):
    response = owner_client.get(url)
    assert response.status_code == 400
    assert response.json() == {"error": "Request contains a NUL character, which is never valid input"}


def test_nul_in_calls_answers_in_envelope(owner_client, owner):
    tunnel = make_tunnel(owner)
    response = owner_client.get(f"/api/v1/calls/set_allow_clientless?tunnel={tunnel.hash[:8]}%00&allow=true")
    assert response.status_code == 400
    assert response.json()["error_code"] == 31 and response.json()["success"] is False
    assert Tunnel.objects.get(pk=tunnel.pk).auto_restart is True


def test_escaped_nul_in_json_body_changes_nothing(owner_client, owner):
    before = ApiToken.objects.count()
    body = '{"label": "x\\u0000y"}'
    response = owner_client.post("/api/v1/tokens/", body, content_type="application/json")
    assert response.status_code == 400
    assert ApiToken.objects.count() == before
    response = owner_client.post("/config/new", json.dumps(tunnel_data(name="a\x00b")), content_type="application/json")
    assert response.status_code == 400
    assert not Tunnel.objects.exists()


def test_escaped_backslash_before_u0000_is_not_a_nul(owner_client):
    # JSON "a\\u0000b" is the six characters a, \, u, 0, 0, 0, 0, b: printable, allowed.
    body = json.dumps(tunnel_data(name="a\\u0000b"))
    assert "\\\\u0000" in body
    response = owner_client.post("/config/new", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Tunnel.objects.get().name == "a\\u0000b"


def test_refused_request_is_still_recorded(owner_client):
    owner_client.get("/api/v1/tunnels/?name=%00")
    row = ApiRequest.objects.get(path="/api/v1/tunnels/")
    assert row.status == 400


def test_every_operation_documents_the_400():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    missing = [
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "put", "post", "patch", "delete") and "400" not in operation["responses"]
    ]
    assert missing == []
