"""Parsers for query parameters shared by the API surfaces. They raise ValueError."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import get_current_timezone, is_naive, make_aware


def parse_since(value: str) -> datetime:
    """An ISO-8601 date or date-time, as an aware UTC datetime.

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
