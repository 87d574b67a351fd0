"""Shared API plumbing: every error body is ``{"error": "<message>"}``."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tunnels.services import ServiceError


def _message(detail: Any) -> str:
    if isinstance(detail, list):
        return " ".join(_message(item) for item in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_message(value)}" for key, value in detail.items())
    return str(detail)


def _field_messages(detail: Any) -> list[str]:
    """One field's messages as a flat list, so ``fields`` is always ``{name: [message, ...]}``.

    DRF nests errors of list items by index (``{"scopes": {0: ["..."]}}``); those
    become ``"0: ..."`` under the field's own name.
    """
    if isinstance(detail, dict):
        return [f"{key}: {message}" for key, value in detail.items() for message in _field_messages(value)]
    if isinstance(detail, list):
        return [message for item in detail for message in _field_messages(item)]
    return [str(detail)]


def error_response(message: str, status_code: int, **extra: Any) -> Response:
    return Response({"error": message, **extra}, status=status_code)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF errors and service-layer refusals as ``{"error": …}`` (+ ``fields``)."""
    if isinstance(exc, ServiceError):
        extra = {"fields": exc.fields} if exc.fields else {}
        return error_response(exc.message, exc.status, **extra)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    body: dict[str, Any]
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        body = {"error": _message(detail), "fields": {name: _field_messages(value) for name, value in detail.items()}}
    elif isinstance(detail, dict) and "detail" in detail:
        body = {"error": str(detail["detail"])}
    else:
        body = {"error": _message(detail)}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        body["retry_after"] = int(exc.wait + 0.999)
    if isinstance(exc, exceptions.ParseError):
        response.status_code = status.HTTP_400_BAD_REQUEST
    response.data = body
    return response
