"""Filters of the request history, shared by ``/api/v1/requests/`` and the dashboard's history page.

One place decides what each filter means and which values are refused, so
both surfaces answer a bad value with the same message naming the filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from django.db.models import QuerySet

from tunnelsite.errors import InvalidInput
from tunnelsite.params import is_whole_number, parse_since

# The filters, in the order a form shows them: name -> what it means.
FILTERS = {
    "method": "HTTP method, e.g. POST.",
    "status": "Response status code.",
    "path": "Path prefix, e.g. /api/v1/tunnels/.",
    "path_contains": "Only paths containing this text (case-insensitive).",
    "since": "Only requests at or after this time.",
    "until": "Only requests before this time; a date alone means up to the end of that day.",
}
DATE_ONLY_LENGTH = 10  # "2026-01-31"


def _refuse(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{name}: {message}", {name: [message]})


def status_code(value: str) -> int:
    if not (is_whole_number(value) and 100 <= int(value) <= 599):
        raise _refuse("status", "must be an HTTP status code (100-599)")
    return int(value)


def _moment(name: str, value: str):
    try:
        return parse_since(value)
    except ValueError as exc:
        raise _refuse(name, str(exc)) from None


def filter_requests(queryset: QuerySet, params: Mapping[str, str]) -> QuerySet:
    """``queryset`` narrowed by the filters present in ``params``; InvalidInput (400) names a bad one."""
    if params.get("method"):
        queryset = queryset.filter(method=params["method"].upper())
    if params.get("status"):
        queryset = queryset.filter(status=status_code(params["status"]))
    if params.get("path"):
        queryset = queryset.filter(path__startswith=params["path"])
    if params.get("path_contains"):
        queryset = queryset.filter(path__icontains=params["path_contains"])
    if params.get("since"):
        queryset = queryset.filter(created_at__gte=_moment("since", params["since"]))
    if params.get("until"):
        until = _moment("until", params["until"])
        if len(params["until"]) == DATE_ONLY_LENGTH:
            until += timedelta(days=1)  # the whole day named
        queryset = queryset.filter(created_at__lt=until)
    return queryset


def newest_first(queryset: QuerySet) -> QuerySet:
    return queryset.order_by("-created_at", "-id")
