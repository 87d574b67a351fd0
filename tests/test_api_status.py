"""REST API v1: GET /api/v1/status (no auth, health check)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import make_tunnel
from tunnels.models import Status, Tunnel, WorkerNode

pytestmark = pytest.mark.django_db

URL = "/api/v1/status"


def test_without_worker_is_503_ok_false():
    response = APIClient().get(URL)
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["workers"] == []
    assert "no worker" in body["error"]


def test_with_a_live_worker_is_200_and_counts(owner, other):
    WorkerNode.objects.create(name="n1", last_seen=timezone.now())
    WorkerNode.objects.create(name="stale", last_seen=timezone.now() - timedelta(hours=1))
    a = make_tunnel(owner)
    make_tunnel(other)
    make_tunnel(other, interactive=True)  # not meant to run
    Tunnel.objects.filter(pk=a.pk).update(status=Status.RUNNING, node="n1")
    response = APIClient().get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["active_tunnels"] == 1
    assert body["desired_tunnels"] == 2
    assert [(w["node"], w["tunnels"]) for w in body["workers"]] == [("n1", 1)]
    assert body["version"]


def test_ignores_credentials_even_bad_ones():
    WorkerNode.objects.create(name="n1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer tsk_wrong")
    assert client.get(URL).status_code == 200


def test_worker_past_its_lease_is_not_live(settings):
    settings.WORKER_LEASE_SECONDS = 5
    WorkerNode.objects.create(name="n1", last_seen=timezone.now() - timedelta(seconds=6))
    assert APIClient().get(URL).status_code == 503


@pytest.mark.parametrize("count", [5, 500])
def test_query_count_is_constant(owner, django_assert_num_queries, count):
    WorkerNode.objects.create(name="n1")
    rows = []
    for index in range(count):
        tunnel = Tunnel(
            owner=owner,
            remote_host="u@h",
            remote_port="80",
            local_port=str(30000 + index),
            name=f"s{index}",
            status=Status.RUNNING,
            node="n1",
        )
        tunnel.hash = tunnel.compute_hash()
        rows.append(tunnel)
    Tunnel.objects.bulk_create(rows)
    # per-node counts and live workers (the health check is not recorded in history)
    with django_assert_num_queries(2):
        body = APIClient().get(URL).json()
    assert body["active_tunnels"] == count


def test_database_unreachable_is_503():
    WorkerNode.objects.create(name="n1")

    def refuse(execute, sql, params, many, context):
        if "tunnels_" in sql:
            raise OperationalError("connection refused")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        response = APIClient().get(URL)
    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert response.json()["error"] == "database unreachable"


def test_not_throttled(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "anon": "2/minute"},
    }
    WorkerNode.objects.create(name="n1")
    client = APIClient()
    assert [client.get(URL).status_code for _ in range(5)] == [200] * 5


def test_answer_is_cached_for_one_second(django_assert_num_queries):
    import time

    assert APIClient().get(URL).status_code == 503
    WorkerNode.objects.create(name="late")
    with django_assert_num_queries(0):
        assert APIClient().get(URL).status_code == 503  # the cached answer, no query
    time.sleep(1.1)
    assert APIClient().get(URL).status_code == 200


def test_other_methods_are_405_json():
    response = APIClient().post(URL)
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert "error" in response.json()
