"""OpenAPI schema and the docs pages: valid schema, no warnings, nothing loaded from outside the site."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from rest_framework.test import APIClient

from tunnels.compat.base import CompatView

pytestmark = pytest.mark.django_db

EXTERNAL_URL = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
METHODS = ("get", "put", "post", "patch", "delete")
# What any authenticated request can meet: bad credentials, a credential without
# the scope (or a session without CSRF), the request throttle.
AUTHENTICATED_ERRORS = {"401", "403", "429"}


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
    assert "/static/drf_spectacular_sidecar/" in html or "/api/redoc/redoc.standalone.js" in html
    assert not EXTERNAL_URL.search(html), EXTERNAL_URL.search(html).group(0)
    assert "http://" not in html and "https://" not in html


def test_sidecar_assets_are_served_locally():
    html = APIClient().get("/api/docs/").content.decode()
    assets = re.findall(r"""(?:src|href)="(/static/[^"]+)\"""", html)
    assert assets
    from django.contrib.staticfiles import finders

    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), asset


# A resource load in HTML, CSS or JavaScript from an absolute address (namespaces,
# JSON-schema ids and links a reader may click are not loads).
OUTSIDE_LOAD = re.compile(
    r"""(?:\bsrc\s*[:=]\s*|\burl\(\s*|@import\s+|importScripts\(\s*|fetch\(\s*)["'`]?\s*(?:https?:)?//"""
)


def served_text(client: APIClient, url: str) -> str:
    from django.contrib.staticfiles import finders

    if url.startswith("/static/"):
        path = finders.find(url.removeprefix("/static/"))
        assert path, url
        return open(path, encoding="utf-8", errors="replace").read()
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_docs_scripts_and_styles_load_nothing_from_outside_the_site(page):
    client = APIClient()
    html = served_text(client, page)
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        text = served_text(client, asset)
        found = OUTSIDE_LOAD.search(text)
        assert not found, f"{asset}: {text[max(found.start() - 80, 0) : found.end() + 80]}"
        assert "cdn." not in text.lower(), asset  # cdn.redoc.ly (ReDoc's footer logo), cdn.jsdelivr.net, ...


def test_redoc_script_is_the_sidecar_bundle_without_its_cdn_logo():
    from tunnels.api import docs

    response = APIClient().get("/api/redoc/redoc.standalone.js")
    assert response["Content-Type"].startswith("text/javascript")
    assert b"Redoc" in response.content and docs.BLANK_IMAGE in response.content
    assert docs.REDOC_CDN_LOGO not in response.content


def test_swagger_ui_has_no_validator_badge():
    html = APIClient().get("/api/docs/").content.decode()
    assert '"validatorUrl": null' in html


def test_private_docs_need_login(settings, owner):
    settings.DOCS_PUBLIC = False
    client = APIClient()
    assert client.get("/api/schema/").status_code == 401
    for page in ("/api/docs/", "/api/redoc/"):
        response = client.get(page)
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    client.force_login(owner)
    assert client.get("/api/docs/").status_code == 200
    assert client.get("/api/schema/").status_code == 200


# --- every operation fully documented ----------------------------------


@pytest.fixture(scope="module")
def built_schema() -> dict:
    # Built in-process, as /api/schema/ serves it, and rendered so it holds plain JSON types.
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


def operations(schema: dict) -> Iterator[tuple[str, dict, list[dict]]]:
    """(``"METHOD /path"``, operation, its parameters including the path item's) for each operation."""
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                operation = item[method]
                parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
                yield f"{method.upper()} {path}", operation, parameters


def is_authenticated(operation: dict) -> bool:
    # drf-spectacular writes ``[{}]`` (or nothing) for operations anyone may call.
    return any(requirement for requirement in operation.get("security", []))


def operation_problems(operation: dict, parameters: list[dict]) -> list[str]:
    """What a reader of /api/docs/ would miss about one operation."""
    responses = operation.get("responses", {})
    problems = []
    if not operation.get("summary"):
        problems.append("no summary")
    if set(operation.get("tags", [])) <= {"v1"}:
        problems.append(f"tags {operation.get('tags')}: name the resource")
    if is_authenticated(operation) and not AUTHENTICATED_ERRORS <= set(responses):
        problems.append(f"authenticated but documents no {sorted(AUTHENTICATED_ERRORS - set(responses))}")
    if any(parameter["in"] == "path" for parameter in parameters) and "404" not in responses:
        problems.append("has a path parameter but no 404")
    for code, response in responses.items():
        if code.startswith("4") and "schema" not in response.get("content", {}).get("application/json", {}):
            problems.append(f"{code} has no JSON body schema")
    return problems


def test_every_operation_has_summary_tag_and_error_responses(built_schema):
    problems = [
        f"{name}: {problem}"
        for name, operation, parameters in operations(built_schema)
        for problem in operation_problems(operation, parameters)
    ]
    assert not problems, "\n".join(problems)


def test_the_completeness_check_catches_each_gap():
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    complete = {
        "summary": "Get a token",
        "tags": ["tokens"],
        "security": [{"apiToken": []}],
        "responses": {"200": {}, **dict.fromkeys(["401", "403", "404", "429"], error)},
    }
    path_parameter = [{"in": "path", "name": "id"}]
    assert operation_problems(complete, path_parameter) == []
    gaps = {
        "no summary": {"summary": ""},
        "name the resource": {"tags": ["v1"]},
        "documents no ['401']": {"responses": {"200": {}, **dict.fromkeys(["403", "404", "429"], error)}},
        "no 404": {"responses": {"200": {}, **dict.fromkeys(["401", "403", "429"], error)}},
        "403 has no JSON body schema": {"responses": {**complete["responses"], "403": {"description": "Forbidden"}}},
    }
    for expected, change in gaps.items():
        problems = operation_problems({**complete, **change}, path_parameter)
        assert any(expected in problem for problem in problems), (expected, problems)
    anonymous = {**complete, "security": [{}], "responses": {"200": {}, "404": error}}
    assert operation_problems(anonymous, path_parameter) == []


def test_compat_operations_describe_themselves_not_their_base_class(built_schema):
    base_doc = " ".join(CompatView.__doc__.split())
    for name, operation, _ in operations(built_schema):
        if "autossh-compat" in operation.get("tags", []):
            description = " ".join(operation.get("description", "").split())
            assert description and description != base_doc, name


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` as JSON Schema's ``null`` type, so jsonschema can check examples."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        else:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def documented_examples(schema: dict) -> Iterator[tuple[str, Any, dict]]:
    """(where, example value, the JSON schema it is documented against) for every JSON example."""
    for name, operation, _ in operations(schema):
        bodies = {"request": operation.get("requestBody", {}), **operation.get("responses", {})}
        for where, body in bodies.items():
            media = body.get("content", {}).get("application/json", {})
            for title, example in media.get("examples", {}).items():
                yield f"{name} {where} {title}", example["value"], media["schema"]


def test_every_example_matches_its_documented_schema(built_schema):
    components = _json_schema(built_schema["components"])
    found = list(documented_examples(built_schema))
    assert found
    mismatches = []
    for where, value, schema in found:
        validator = jsonschema.Draft7Validator(
            {**_json_schema(schema), "components": components}, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
        )
        mismatches += [f"{where}: {problem.message}" for problem in validator.iter_errors(value)]
    assert not mismatches, "\n".join(mismatches)


# Names the examples may use for SSH servers: reserved for documentation (RFC 2606, RFC 5737).
RESERVED_HOST = re.compile(r"^(?:[\w.-]+@)?(?:[\w-]+\.)*(?:example\.(?:com|net|org)|[\w-]+\.invalid)$")
# The seed's own hosts and tunnels (someone's real machines): never in the docs.
SEED_NAMES = ("tempest", "oaklight", "usa2", "dockge", "done-hub")


def strings_in(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, item in value.items():
            yield from strings_in(item, k)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item, key)
    elif isinstance(value, str):
        yield key, value


def test_examples_use_reserved_host_names_only(built_schema):
    text = json.dumps(built_schema).lower()
    assert not [name for name in SEED_NAMES if name in text]
    hosts = [
        (where, value)
        for where, example, _ in documented_examples(built_schema)
        for key, value in strings_in(example)
        if key == "remote_host"
    ]
    assert len(hosts) > 5
    assert [(where, host) for where, host in hosts if not RESERVED_HOST.match(host)] == []


def test_swaggers_default_create_body_makes_a_stopped_tunnel(built_schema, owner):
    """What "Try it out" → "Execute" sends for POST /api/v1/tunnels/ creates a tunnel that does not start."""
    from tests.conftest import client_for
    from tunnels.models import Desired, Tunnel

    body = built_schema["paths"]["/api/v1/tunnels/"]["post"]["requestBody"]["content"]["application/json"]
    example = next(iter(body["examples"].values()))["value"]
    assert RESERVED_HOST.match(example["remote_host"])
    response = client_for(owner).post("/api/v1/tunnels/", example, format="json")
    assert response.status_code == 201, response.content
    assert Tunnel.objects.get(owner=owner).desired_state == Desired.STOPPED
