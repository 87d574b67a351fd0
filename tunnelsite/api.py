"""Shared API plumbing: every error body is ``{"error": "<message>"}``; the JSON parser."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, parsers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from tunnelsite.errors import ServiceError
from tunnelsite.faults import database_fault, report


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


class JSONParser(parsers.JSONParser):
    """DRF's, except that JSON nested too deeply for Python's parser is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


def body_refusal(exc: Exception) -> str | None:
    """The message for Django's own refusals of a request body (too big, too many fields), else None.

    Django raises them as SuspiciousOperation, which would end as its HTML 400 page.
    """
    if isinstance(exc, RequestDataTooBig):
        return f"Request body too large (limit {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes)"
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return f"Request body has too many fields (limit {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})"
    return None


def exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF errors and service-layer refusals as ``{"error": …}`` (+ ``fields``); a database that does
    not answer as ``503 {"error", "retry_after"}`` (``tunnelsite.faults``).

    Anything else unexpected returns None: DRF re-raises it and ``FaultMiddleware`` answers the
    JSON 500, for DRF and plain views alike."""
    fault = database_fault(exc)
    if fault is not None:
        set_rollback()
        report(context["request"], exc, fault)
        return Response(fault.body(), status=fault.status, headers=fault.headers())
    if isinstance(exc, ServiceError):
        extra = {"fields": exc.fields} if exc.fields else {}
        return error_response(exc.message, exc.status, **extra)
    refusal = body_refusal(exc)
    if refusal:
        return error_response(refusal, status.HTTP_400_BAD_REQUEST)
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
