"""OpenAPI schema and the docs pages: valid schema, no warnings, nothing loaded from outside the site."""

from __future__ import annotations

import io
import re

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EXTERNAL_URL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def test_spectacular_validates_without_warnings(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target), stdout=out, stderr=err)
    assert "Warning" not in err.getvalue() and "Error" not in err.getvalue(), err.getvalue()
    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")


def test_schema_documents_every_v1_tunnels_endpoint_and_error():
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    paths = schema["paths"]
    for path in (
        "/api/v1/status",
        "/api/v1/tunnels/",
        "/api/v1/tunnels/{id}/",
        "/api/v1/tunnels/{id}/start/",
        "/api/v1/tunnels/{id}/stop/",
        "/api/v1/tunnels/{id}/restart/",
        "/api/v1/tunnels/{id}/logs/",
        "/api/v1/tunnels/{id}/sessions/",
        "/api/v1/history/",
        "/api/v1/backups/",
        "/api/v1/backups/{id}/restore/",
        "/api/v1/calls/connect",
        "/api/v1/calls/disconnect",
        "/api/v1/calls/client_status",
        "/api/v1/calls/set_allow_clientless",
    ):
        assert path in paths, path
    create = paths["/api/v1/tunnels/"]["post"]
    assert {"201", "400", "401", "403", "409", "429"} <= set(create["responses"])
    assert paths["/api/v1/status"]["get"].get("security", [{}]) == [{}]  # no credentials needed
    assert set(schema["components"]["securitySchemes"]) >= {"apiToken", "httpSignature", "legacyApiKey", "cookieAuth"}
    assert {tag["name"] for tag in schema["tags"]} >= {"status", "tunnels", "history", "backups", "calls"}


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_nothing_from_outside_the_site(page):
    response = APIClient().get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert not EXTERNAL_URL.search(html), EXTERNAL_URL.search(html).group(0)
    assert "http://" not in html and "https://" not in html


def test_sidecar_assets_are_served_locally():
    html = APIClient().get("/api/docs/").content.decode()
    assets = re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html)
    assert assets
    from django.contrib.staticfiles import finders

    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), asset


def test_private_docs_need_login(settings, owner):
    settings.DOCS_PUBLIC = False
    client = APIClient()
    assert client.get("/api/schema/").status_code == 401
    for page in ("/api/docs/", "/api/redoc/"):
        response = client.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(owner)
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/schema/").status_code == 200
