"""Parsers for query parameters shared by the API surfaces."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import get_current_timezone, is_naive, make_aware
from rest_framework.exceptions import ValidationError


def is_whole_number(value: str) -> bool:
    """ASCII digits only: str.isdigit() alone also accepts "²" (int() refuses it: a 500) and "٣" (int() reads 3)."""
    return value.isascii() and value.isdigit()


def query_whole_number(request, name: str, default: int, minimum: int) -> int:
    """``?name=`` as a whole number of at least ``minimum``; ``default`` when absent; a 400 naming it otherwise."""
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    if not is_whole_number(raw) or int(raw) < minimum:
        raise ValidationError({name: [f"must be a whole number of at least {minimum}"]})
    return int(raw)


def parse_since(value: str) -> datetime:
    """An ISO-8601 date or date-time, as an aware UTC datetime; ValueError otherwise.

    Converted to UTC because Python accepts offsets up to ±23:59 while
    PostgreSQL refuses anything beyond ±15:59 in a query parameter.
    """
    try:
        moment = parse_datetime(value)
    except ValueError:
        moment = None
    if moment is None:
        day = parse_date(value) if len(value) == 10 else None
        if day is None:
            raise ValueError("expected an ISO-8601 date or date-time, e.g. 2026-01-31T12:00:00Z")
        moment = datetime(day.year, day.month, day.day)
    try:
        if is_naive(moment):
            moment = make_aware(moment, get_current_timezone())
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("date-time is out of range") from None
