"""The tunnels' admin in headless chromium: badges render, the bulk stop action works.

Screenshots of the admin's tunnel list at 1280 and 390 px go to screenshots/.
"""

from __future__ import annotations

import pytest

from tests.browser import PHONE, screenshot, sqlite_pass_only
from tests.factories import tunnel_data
from tunnels import services
from tunnels.models import Desired, Status, Tunnel, WorkerNode

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]
PASSWORD = "root-pass-123"


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def test_admin_bulk_stop_and_badges(page_for, django_user_model, owner):
    root = django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    WorkerNode.objects.create(name="node-a")  # a live node: no "stale" mark in the screenshot
    statuses = [Status.RUNNING, Status.FAILED, Status.BACKOFF, Status.STARTING, Status.STOPPED]
    tunnels = [services.create_tunnel(owner, tunnel_data(name=f"admin-{s}"), start=True) for s in statuses]
    for tunnel, status in zip(tunnels, statuses, strict=True):
        error = "ssh: connect to host ssh.example.com port 22: Connection refused" if status == Status.FAILED else ""
        Tunnel.objects.filter(pk=tunnel.pk).update(status=status, last_error=error, node="node-a")

    page = page_for(root, PASSWORD)
    page.goto("/admin/tunnels/tunnel/")
    badges = page.locator("#result_list td.field-status_badge .ts-badge")
    expect()(badges).to_have_count(len(statuses))
    failed = page.locator("#result_list tr", has_text="admin-failed").locator("td.field-status_badge .ts-badge")
    assert failed.get_attribute("title").endswith("Connection refused")
    # A colored pill, not plain text: the inline style reaches the rendered element.
    assert failed.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(179, 38, 30)"
    screenshot(page, "admin-tunnels")

    for name in ("admin-running", "admin-backoff"):
        page.locator("#result_list tr", has_text=name).locator("input.action-select").check()
    page.locator("select[name=action]").select_option("stop_tunnels")
    page.get_by_role("button", name="Go").click()
    expect()(page.locator(".messagelist")).to_contain_text("2 asked to stop")
    desired = dict(Tunnel.objects.values_list("name", "desired_state"))
    assert desired == {
        "admin-running": Desired.STOPPED,
        "admin-backoff": Desired.STOPPED,
        "admin-failed": Desired.RUNNING,
        "admin-starting": Desired.RUNNING,
        "admin-stopped": Desired.RUNNING,
    }

    phone = page_for(root, PASSWORD, viewport=PHONE)
    phone.goto("/admin/tunnels/tunnel/")
    expect()(phone.locator("#result_list td.field-status_badge .ts-badge")).to_have_count(len(statuses))
    screenshot(phone, "admin-tunnels")
