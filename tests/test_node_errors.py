"""A node-level problem a worker reports with its heartbeat (``WorkerNode.error``/``error_since``) is
shown by ``GET /api/v1/status``, the admin's worker nodes and the dashboard's tunnels page.

The rows are written directly here; the worker side that writes them has its own tests."""

from __future__ import annotations

import contextlib
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tunnels.api.views import StatusView
from tunnels.models import WorkerNode
from tunnelsite import faults

pytestmark = pytest.mark.django_db

URL = "/api/v1/status"


def node(name: str, *, age: float = 0, error: str = "", since_ago: float | None = None) -> WorkerNode:
    now = timezone.now()
    since = None if since_ago is None else now - timedelta(seconds=since_ago)
    return WorkerNode.objects.create(name=name, last_seen=now - timedelta(seconds=age), error=error, error_since=since)


@pytest.fixture
def nodes() -> None:
    node("calm")
    node("full", error="disk full: data dir", since_ago=90)
    node("gone", age=settings.WORKER_LEASE_SECONDS + 60, error="database unreachable", since_ago=600)


@pytest.mark.usefixtures("nodes")
def test_status_shows_each_live_nodes_error_and_lists_the_problems():
    response = APIClient().get(URL)
    assert response.status_code == 200  # a problem does not take the service down
    body = response.json()
    assert body["ok"] is True
    workers = {w["node"]: w for w in body["workers"]}
    assert set(workers) == {"calm", "full"}  # past its lease, "gone" is not a live worker
    assert (workers["calm"]["error"], workers["calm"]["error_since"]) == ("", None)
    assert workers["full"]["error"] == "disk full: data dir"
    since = WorkerNode.objects.get(name="full").error_since
    assert workers["full"]["error_since"] == since.isoformat().replace("+00:00", "Z")
    assert body["problems"] == [
        {"node": "full", "error": "disk full: data dir", "since": workers["full"]["error_since"]}
    ]


def test_status_without_problems_has_an_empty_list():
    node("calm")
    assert APIClient().get(URL).json()["problems"] == []


def test_status_when_the_database_does_not_answer_says_when_to_retry(monkeypatch):
    def fail(cls):
        raise OperationalError("connection refused")

    monkeypatch.setattr(StatusView, "cached_answer", classmethod(fail))
    response = APIClient().get(URL)
    assert response.status_code == 503 and response["Retry-After"] == str(faults.RETRY_AFTER_DOWN)
    body = response.json()
    assert body["ok"] is False and body["error"] == "database unreachable"
    assert body["retry_after"] == faults.RETRY_AFTER_DOWN and body["problems"] == []


@pytest.fixture
def admin_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123"))
    return client


def row_of(page: str, name: str) -> str:
    return next(row for row in page.split("<tr") if f">{name}<" in row)


@pytest.mark.usefixtures("nodes")
def test_admin_node_list_shows_the_problem_and_an_error_badge(admin_client):
    page = admin_client.get("/admin/tunnels/workernode/").content.decode()
    full = row_of(page, "full")
    assert ">error<" in full and "disk full: data dir (since 90 s ago)" in full
    calm = row_of(page, "calm")
    assert ">alive<" in calm and "disk full" not in calm
    gone = row_of(page, "gone")
    assert ">stale<" in gone and "database unreachable (since 10 min ago)" in gone


@pytest.mark.usefixtures("nodes")
def test_admin_node_page_shows_error_and_since(admin_client):
    full = WorkerNode.objects.get(name="full")
    page = admin_client.get(f"/admin/tunnels/workernode/{full.pk}/change/").content.decode()
    assert "disk full: data dir" in page and "Error since" in page


@pytest.mark.usefixtures("nodes")
def test_admin_node_list_can_be_searched_by_error(admin_client):
    page = admin_client.get("/admin/tunnels/workernode/?q=disk+full").content.decode()
    assert ">full<" in page and ">calm<" not in page


@pytest.mark.usefixtures("nodes")
def test_dashboard_warns_of_live_node_problems_only(owner):
    client = Client()
    client.force_login(owner)
    page = client.get("/").content.decode()
    assert "Worker full reports: disk full: data dir" in page
    assert "database unreachable" not in page  # a stale node's last word is not news


def test_dashboard_without_problems_shows_no_warning(owner):
    node("calm")
    client = Client()
    client.force_login(owner)
    assert "reports:" not in client.get("/").content.decode()


def test_status_measures_a_full_data_dir_itself(tmp_path, settings):
    """With SQLite in the full data dir no worker can write that it is full: the health check looks itself."""

    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        settings.DATA_DIR = mount
        node("calm")
        cache.clear()  # the answer is cached for a second
        assert APIClient().get(URL).json()["problems"] == []
        with open(mount / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        cache.clear()
        body = APIClient().get(URL).json()
        assert body["problems"] == [{"node": "web", "error": "disk full: data dir", "since": None}]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
