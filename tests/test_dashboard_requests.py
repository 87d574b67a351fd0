"""Dashboard: the request history page (/requests/): own rows, filters, pagination, constant queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiRequest
from tunnels.dashboard.requests import PAGE_SIZE

pytestmark = pytest.mark.django_db
URL = "/requests/"


@pytest.fixture
def alice(owner) -> Client:
    client = Client()
    client.force_login(owner)
    return client


def row(user, path: str = "/api/v1/tunnels/", method: str = "GET", status: int = 200, days_ago: int = 0):
    entry = ApiRequest.objects.create(user=user, method=method, path=path, status=status, duration_ms=1.5)
    if days_ago:
        ApiRequest.objects.filter(pk=entry.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return entry


def paths(response) -> list[str]:
    return [entry.path for entry in response.context["page"].object_list]


def test_only_own_requests_newest_first(alice, owner, other):
    row(owner, "/api/v1/old/", days_ago=2)
    row(owner, "/api/v1/new/")
    row(other, "/api/v1/theirs/")
    response = alice.get(URL)
    assert response.status_code == 200 and paths(response) == ["/api/v1/new/", "/api/v1/old/"]
    assert "/api/v1/theirs/" not in response.content.decode()


def test_filters(alice, owner):
    row(owner, "/api/v1/tokens/", method="POST", status=400)
    row(owner, "/api/v1/tunnels/", status=200, days_ago=3)
    row(owner, "/list", status=200)
    assert paths(alice.get(URL, {"method": "POST"})) == ["/api/v1/tokens/"]
    assert paths(alice.get(URL, {"status": "400"})) == ["/api/v1/tokens/"]
    assert paths(alice.get(URL, {"path_contains": "TUNNELS"})) == ["/api/v1/tunnels/"]
    day = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert paths(alice.get(URL, {"until": day})) == ["/api/v1/tunnels/"]
    assert set(paths(alice.get(URL, {"since": day}))) == {"/api/v1/tokens/", "/list"}


@pytest.mark.parametrize(("field", "value"), [("status", "abc"), ("since", "yesterday"), ("until", "2026-13-01")])
def test_bad_filter_is_400_naming_it_and_lists_nothing(alice, owner, field, value):
    row(owner)
    response = alice.get(URL, {field: value})
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert paths(response) == []
    assert b"Correct the filter above" in response.content


def test_pagination_keeps_the_filters(alice, owner):
    for number in range(PAGE_SIZE + 5):
        row(owner, f"/api/v1/tunnels/{number}/")
    row(owner, "/list")
    first = alice.get(URL, {"path_contains": "tunnels"})
    assert len(paths(first)) == PAGE_SIZE and "path_contains=tunnels&amp;page=2" in first.content.decode()
    second = alice.get(URL, {"path_contains": "tunnels", "page": "2"})
    assert len(paths(second)) == 5 and "/list" not in paths(second)
    assert not alice.get(URL, {"page": "2"}).context["filtered"]  # a page number alone is no filter


def test_query_count_is_constant(alice, owner, django_assert_num_queries):
    for _ in range(30):
        row(owner)
    with django_assert_num_queries(4):  # session, user, count, page
        alice.get(URL, {"method": "GET", "path_contains": "tunnels"})
