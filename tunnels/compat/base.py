"""What every autossh-compatible view shares: the original's error bodies, CORS,
JSON-only bodies in and out, and hash-prefix lookups among the caller's tunnels.

The contract is ``docs/COMPAT.md``; rules about tunnels live in ``tunnels.services``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import COMPAT_AUTHENTICATION
from accounts.visibility import visible_for
from tunnels import services
from tunnels.models import Tunnel
from tunnelsite.api import body_refusal
from tunnelsite.paths import COMPAT_MOUNT, add_cors, is_compat_path  # noqa: F401 - COMPAT_MOUNT re-exported

UNAUTHORIZED = {"error": "Unauthorized", "message": "Valid Bearer token required"}
NOT_FOUND = {"error": "Not Found"}
METHOD_NOT_ALLOWED = {"error": "Method not allowed"}
HASH_REQUIRED = "Tunnel hash required"
# Terminal colour codes and other control characters never reach ``output``.
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


class BadBody(exceptions.APIException):
    status_code = 400


class JSONOnly(BaseContentNegotiation):
    """The original always answered JSON, whatever the client's Accept header says."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def plain(text: str) -> str:
    return _CONTROL.sub("", text)


class CompatView(APIView):
    """Base of every compat view: exact error bodies of the original, CORS, JSON only."""

    authentication_classes = COMPAT_AUTHENTICATION  # Bearer only (or the session), like the original
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONOnly
    # Bodies are read by ``json_body`` whatever the Content-Type (curl -d sends form-encoded).
    parser_classes: list = []

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # CORS preflight: answered before authentication, like the original.
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
            response["Allow"] = ", ".join(self.allowed_methods)
            return add_cors(response)
        return super().dispatch(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        return add_cors(super().finalize_response(request, response, *args, **kwargs))

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            return Response(UNAUTHORIZED, status=401, headers={"WWW-Authenticate": "Bearer"})
        if isinstance(exc, exceptions.MethodNotAllowed):
            return Response(METHOD_NOT_ALLOWED, status=405)
        if isinstance(exc, services.ServiceError):
            return Response({"error": exc.message}, status=exc.status)
        response = super().handle_exception(exc)
        if isinstance(response.data, dict):
            response.data.pop("fields", None)  # the original's errors are {"error": "..."}
        return response

    # --- helpers for the views ---

    def tunnels(self) -> QuerySet[Tunnel]:
        """The caller's tunnels (staff acting as admin: everyone's), the same rule as REST v1."""
        return visible_for(self.request, Tunnel.objects.all())

    def resolve(self, prefix: str) -> Tunnel:
        return services.resolve_prefix(self.tunnels(), prefix)

    def actor(self) -> services.Actor:
        return services.Actor.from_request(self.request)

    def json_body(self) -> dict[str, Any]:
        """The request body as a JSON object, or a 400 naming what is wrong with it."""
        try:
            raw = self.request._request.body
        except RequestDataTooBig as exc:
            raise BadBody(body_refusal(exc)) from None
        if not raw.strip():
            raise BadBody("Request body required")
        try:
            data = json.loads(raw)
        except UnicodeDecodeError:
            raise BadBody("Request body is not valid UTF-8") from None
        except ValueError as exc:
            raise BadBody(f"Request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadBody("Request body is not valid JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise BadBody(f"Request body must be a JSON object, got {type(data).__name__}")
        return data


class MissingHash(CompatView):
    """``/start/``, ``/logs/``, … with nothing after the slash: the original's 400."""

    methods: tuple[str, ...] = ("post",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Only the methods the full route accepts get the 400; others are 405.
        for method in self.methods:
            setattr(self, method, self._missing)

    def _missing(self, request, *args: Any, **kwargs: Any) -> Response:
        return Response({"error": HASH_REQUIRED}, status=400)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Project 404 handler: the compat ``{"error": "Not Found"}`` for API clients.

    The admin (and browsers outside the API paths) keep Django's HTML page.
    """
    path = request.path_info
    wants_html = "text/html" in request.headers.get("Accept", "")
    api_path = path.startswith("/api/") or is_compat_path(path)
    if path.startswith("/admin/") or (wants_html and not api_path):
        return page_not_found(request, exception)
    response = JsonResponse(NOT_FOUND, status=404)
    return add_cors(response) if is_compat_path(path) else response
