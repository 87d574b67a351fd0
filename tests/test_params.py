from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import client_for
from tunnelsite.params import parse_since


def test_parse_since_converts_offsets_to_utc():
    # +16:14 is legal in Python but out of range for PostgreSQL: it must not reach the query as is.
    assert parse_since("2026-01-31T12:00:00+16:14") == datetime(2026, 1, 30, 19, 46, tzinfo=UTC)
    assert parse_since("2026-01-31").tzinfo is UTC


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "0001-01-01T00:00:00+23:59", "2026-01-31T25:00"])
def test_parse_since_rejects(value):
    with pytest.raises(ValueError):
        parse_since(value)


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/v1/history/", "/api/v1/requests/"])
def test_extreme_offsets_in_since_are_accepted(owner, url):
    response = client_for(owner).get(url, {"since": "0140-08-08T19:30:16+16:14"})
    assert response.status_code == 200, response.content


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["99999999999999999999", "0", "600"])
def test_request_status_filter_is_bounded(owner, value):
    response = client_for(owner).get("/api/v1/requests/", {"status": value})
    assert response.status_code == 400
    assert "status" in response.json()["fields"]
