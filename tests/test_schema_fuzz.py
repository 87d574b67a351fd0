"""Property-based fuzz of the REST API v1 and the compat API against their OpenAPI schema (schemathesis).

Runs in-process through the WSGI app, authenticated as a normal user, with a
bounded number of examples per operation. Fails on any 5xx, an undocumented
status code or content type, or a body that does not match the documented schema.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import tokens
from tests.factories import make_tunnel
from tunnels.models import WorkerNode

# CI's PostgreSQL pass repeats the fuzz with fewer examples: every operation is still tried there.
MAX_EXAMPLES = 8 if os.environ.get("DATABASE_URL") else 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Every documented surface: REST v1 (tunnels and accounts) and the compat API.
OUR_PATHS = r"^/api/(v1|autossh)/"


def _own_schema() -> dict:
    # Generated directly (no request): collection happens before the test database exists.
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(document))


schema = schemathesis.openapi.from_dict(_own_schema()).include(path_regex=OUR_PATHS)
APP = get_wsgi_application()


@pytest.fixture
def in_test_transaction():
    """Like Django's test client: don't let request signals close the test's connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_header(owner) -> dict[str, str]:
    # Something to find, so not every answer is an empty list. Interactive: `POST /start` (all) skips it,
    # so the fuzzer's start-alls do not each wait out their `wait` for a worker that never comes.
    make_tunnel(owner, interactive=True)
    # A live worker, so /status answers 200 (its documented 503 would count as a server error).
    # The fuzzer cannot guess the tunnel's id or hash, so no action waits for this worker.
    WorkerNode.objects.create(name="fuzz")
    _, raw = tokens.mint(owner, label="fuzz")
    return {"Authorization": f"Bearer {raw}"}


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    # Fixed examples by default, so CI is reproducible; TUNNELSITE_FUZZ_RANDOM=1
    # explores new ones (run it when changing an endpoint).
    derandomize=os.environ.get("TUNNELSITE_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case, auth_header, in_test_transaction):
    case.call_and_validate(app=APP, headers=auth_header, checks=CHECKS)
