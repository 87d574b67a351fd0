"""OpenAPI pieces of the accounts API: error responses, path parameters, examples.

Error bodies are the v1 shape ``{"error", "fields"?, "retry_after"?}`` that
``tunnelsite.api.exception_handler`` writes; ``ErrorSerializer`` describes it once
for every v1 endpoint.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from tunnelsite.schema import BAD_REQUEST, THROTTLED, UNAUTHORIZED, UNSUPPORTED_MEDIA_TYPE, error

NO_SCOPE = error(
    "The credential lacks the scope the request needs (`read` to look, `write` to change), "
    "or a session request lacks its CSRF token."
)
STAFF_ONLY = error(
    "Only staff users whose credential has the `admin` scope may use the users API "
    "(a session request also needs its CSRF token)."
)

# What every authenticated accounts endpoint can answer.
AUTH_ERRORS = {401: UNAUTHORIZED, 403: NO_SCOPE, 429: THROTTLED}
STAFF_ERRORS = {**AUTH_ERRORS, 403: STAFF_ONLY}
# Endpoints that parse a request body.
BODY_ERRORS = {400: BAD_REQUEST, 415: UNSUPPORTED_MEDIA_TYPE}

TOKEN_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The token's `id` (not the token itself)."
)
KEY_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The access key's `id` (its `keyId` in signatures)."
)
NO_SUCH_USER = error("No user has this username.")

# --- examples (request bodies from the rustunnel and JumpServer docs in the seeds) ---

TOKEN_REQUEST = OpenApiExample("label only", value={"label": "ci-deploy"}, request_only=True)
TOKEN_CREATED = OpenApiExample(
    "created",
    value={
        "id": "0b7e4c1a-52f3-4d0e-9d47-3f6a1c2e8b90",
        "label": "ci-deploy",
        "kind": "private",
        "prefix": "tsk_Qm9yZ2VkTG9v",
        "scopes": ["read", "operate", "write"],
        "user": "alice",
        "created_at": "2026-06-01T12:00:00Z",
        "last_used_at": None,
        "expires_at": None,
        "token": "tsk_Qm9yZ2VkTG9v_9xJrX1mA3Vb7kT2yQe5wLc8hNp4sUd6fZg0iRo1tBvE",
    },
    response_only=True,
    status_codes=["201"],
)
LOGIN_REQUEST = OpenApiExample("JumpServer client", value={"username": "admin", "password": "admin"}, request_only=True)
LOGIN_RESPONSE = OpenApiExample(
    "temporary token",
    value={
        "token": "tsk_VGVtcG9yYXJ5_p3Lk8Qw2Zr5Xn7Tb1Ym4Hc6Jd9Fs0Ga2Ve8Ku3Ni5Ow",
        "keyword": "Bearer",
        "date_expired": "2026-06-02T12:00:00Z",
    },
    response_only=True,
    status_codes=["201"],
)
