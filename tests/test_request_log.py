"""The request-history backlog (accounts.request_log): bounded, written by its own thread, and a row
whose user went away meanwhile is kept without the link. The lock and outage cases are in
test_faults_sqlite_lock.py and test_faults_e2e.py."""

from __future__ import annotations

import pytest
from django.utils import timezone

from accounts.models import ApiRequest
from accounts.request_log import Backlog
from tests.procs import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def row(path: str, user_id: int | None = None) -> dict:
    return {
        "created_at": timezone.now(),
        "user_id": user_id,
        "method": "GET",
        "path": path,
        "status": 200,
        "duration_ms": 1.0,
    }


def test_a_full_backlog_drops_and_counts_the_rest():
    backlog = Backlog(limit=2)
    with backlog._lock:  # hold the writer off while the rows arrive, as a database outage would
        backlog._rows.extend([row("/a"), row("/b")])
    backlog.add(row("/c"))
    assert backlog.dropped == 1
    wait_for(lambda: not len(backlog), timeout=20, message="the backlog to be written")
    assert sorted(ApiRequest.objects.values_list("path", flat=True)) == ["/a", "/b"]
    assert backlog.dropped == 0  # counted once per outage, reset when it drains


def test_rows_of_a_user_deleted_meanwhile_are_kept_without_the_link(owner):
    user_id = owner.pk
    owner.delete()
    backlog = Backlog()
    backlog.add(row("/api/v1/tunnels/", user_id))
    backlog.add(row("/list"))
    wait_for(lambda: not len(backlog), timeout=20, message="the backlog to be written")
    assert sorted(ApiRequest.objects.values_list("path", "user_id")) == [("/api/v1/tunnels/", None), ("/list", None)]
