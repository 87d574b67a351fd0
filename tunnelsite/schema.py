"""OpenAPI postprocessing shared by every API surface."""

from __future__ import annotations

from typing import Any

COMPAT_PREFIX = "/api/autossh/"
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
