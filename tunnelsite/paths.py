"""Which URL paths belong to which API surface, and the compat API's CORS headers.

Here, below both apps, because the request guards (``tunnelsite.middleware``,
``tunnelsite.faults``), the request history (``accounts``) and the compat views
(``tunnels.compat``) all need the same answer.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse

API_PREFIX = "/api/"
CALLS_PREFIX = "/api/v1/calls/"
# The compat API is served under this mount and again at the original's root paths (tunnels/compat/urls.py).
COMPAT_MOUNT = "/api/autossh/"
COMPAT_ROOTS = ("/list", "/status", "/start", "/stop", "/edit", "/delete", "/config", "/logs")
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
}


def is_compat_root(path: str) -> bool:
    return any(path == root or path.startswith(root + "/") for root in COMPAT_ROOTS)


def is_compat_path(path: str) -> bool:
    return path.startswith(COMPAT_MOUNT) or is_compat_root(path)


def is_api_path(path: str) -> bool:
    """REST v1, the docs and schema, the compat API: surfaces whose clients read JSON, never HTML."""
    return path.startswith(API_PREFIX) or is_compat_root(path)


def add_cors(response: HttpResponse) -> HttpResponse:
    if settings.COMPAT_CORS:
        for header, value in CORS_HEADERS.items():
            response[header] = value
    return response
