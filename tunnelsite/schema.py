"""OpenAPI pieces shared by every API surface: the v1 error body, its documented
responses, and the postprocessing hook."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from tunnelsite.paths import COMPAT_MOUNT


class ErrorSerializer(serializers.Serializer):
    """The v1 error body that ``tunnelsite.api.exception_handler`` writes."""

    error = serializers.CharField(help_text="Human-readable message.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Per-field messages (validation errors only).",
    )
    retry_after = serializers.IntegerField(
        required=False, help_text="Seconds to wait before sending the request again (429 and 503 only)."
    )


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


BAD_REQUEST = error("Invalid input: `error` names the problem, `fields` has per-field messages.")
UNAUTHORIZED = error("No valid credentials.")
FORBIDDEN = error("The credential lacks the required scope, or a quota forbids the change.")
NOT_FOUND = error("No such object among the caller's.")
CONFLICT = error("Conflicts with the current state (same configuration exists, interactive tunnel).")
THROTTLED = error("Too many requests; `retry_after` says when to try again.")
UNSUPPORTED_MEDIA_TYPE = error("The body is not JSON, form or multipart data.")

# Responses every authenticated v1 endpoint can give.
COMMON_ERRORS = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: THROTTLED}

COMPAT_PREFIX = COMPAT_MOUNT
METHODS = ("get", "put", "post", "patch", "delete")


def _error_ref(path: str) -> str:
    return "#/components/schemas/CompatError" if path.startswith(COMPAT_PREFIX) else "#/components/schemas/Error"


def document_bad_request(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Every operation can answer 400: ``RejectNulMiddleware`` refuses NUL characters anywhere.

    Operations that already document a 400 keep theirs (it covers the same shape).
    """
    for path, item in result.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None or "400" in operation.get("responses", {}):
                continue
            operation.setdefault("responses", {})["400"] = {
                "description": "Bad request, for example a NUL character anywhere in the request.",
                "content": {"application/json": {"schema": {"$ref": _error_ref(path)}}},
            }
    return result
