"""The dashboard in headless chromium against a live server, a real worker and the test sshd.

One ordinary user creates a tunnel through the form, watches it come up and its log lines arrive
without reloading, stops and starts it from the table, and deletes it; another user sees none of it
and gets the 404 page on its URLs. Screenshots of both pages at 1280 and 390 px go to screenshots/
(``TUNNELSITE_UPDATE_DOCS_IMAGES=1`` also refreshes the README's docs/images/dashboard.png).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import PHONE, publish, screenshot, sqlite_pass_only
from tests.procs import pool_port
from tests.worker_fixtures import wait_fetch
from tunnels.models import Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]

README_IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "dashboard.png"
WAIT_MS = 20_000


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def mark_loaded(page) -> None:
    """A flag that only survives as long as the document does: still there = the page never reloaded."""
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


def polls_pause_while_hidden(page) -> bool:
    """No table refresh while the tab is hidden; one as soon as it shows again."""
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/tunnels/table/" in request.url else None)
    page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true})")
    page.wait_for_timeout(300)  # a poll already in flight may still land
    polls.clear()
    page.wait_for_timeout(4_000)  # longer than the 3 s interval
    hidden_polls = len(polls)
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    page.wait_for_timeout(1_000)
    return hidden_polls == 0 and len(polls) >= 1


def create_through_form(page, sshd, target_port: int, listen_port: int) -> None:
    page.get_by_role("link", name="Add a tunnel").first.click()
    page.get_by_label("-L · local forward").check()
    page.get_by_role("textbox", name="Name").fill("browser-e2e")
    page.get_by_role("textbox", name="SSH server").fill(sshd.destination)
    page.get_by_role("textbox", name="Remote port").fill(str(target_port))
    page.get_by_role("textbox", name="Local port").fill(str(listen_port))
    page.get_by_role("spinbutton", name="SSH port").fill(str(sshd.port))
    page.get_by_role("button", name="Create tunnel").click()


def test_user_runs_a_tunnel_from_the_browser(page_for, worker, sshd, owner, other, owner_key, target_server):
    page = page_for(owner, "alice-pass-123")
    listen_port = pool_port()
    create_through_form(page, sshd, target_server.port, listen_port)
    tunnel = Tunnel.objects.get(owner=owner, name="browser-e2e")
    assert page.url.endswith(f"/tunnels/{tunnel.uuid}/")

    # The tunnel page follows the worker: status and log lines arrive without a reload.
    mark_loaded(page)
    expect()(page.locator("#tunnel-state .badge")).to_have_text("running", timeout=WAIT_MS)
    expect()(page.locator("#tunnel-log pre.log")).not_to_be_empty(timeout=WAIT_MS)
    assert same_document(page)
    wait_fetch(listen_port, f"hello from target {target_server.port}")

    # Script-only controls appear once the script runs (hidden in the HTML for JS-off reading).
    expect()(page.get_by_role("button", name="Copy id")).to_be_visible()

    # Test connection: the worker runs it and the steps appear.
    page.get_by_role("button", name="Test connection").click()
    expect()(page.locator("#tunnel-test .badge")).to_have_text("passed", timeout=WAIT_MS)
    expect()(page.locator("#tunnel-test .steps")).to_contain_text("auth")
    screenshot(page, "tunnel")
    phone = page_for(owner, "alice-pass-123", viewport=PHONE)
    phone.goto(f"/tunnels/{tunnel.uuid}/")
    screenshot(phone, "tunnel")

    # Edit in place: the configuration card opens its form on the page.
    page.get_by_text("Edit configuration").click()
    page.get_by_role("checkbox", name="Restart when it drops").uncheck()
    page.get_by_role("button", name="Save").click()
    expect()(page.locator("#configuration")).to_contain_text("Restart when it dropsno")
    tunnel.refresh_from_db()
    assert tunnel.auto_restart is False

    # The table: stop, then start again, and watch the badge follow without reloading.
    page.get_by_role("link", name="← Tunnels").click()
    row = page.locator(f"#row-{tunnel.uuid}")
    row.get_by_role("button", name="Stop browser-e2e").click()
    mark_loaded(page)
    expect()(row.locator(".badge")).to_have_text("stopped", timeout=WAIT_MS)
    row.get_by_role("button", name="Start browser-e2e").click()
    mark_loaded(page)
    expect()(row.locator(".badge")).to_have_text("running", timeout=WAIT_MS)
    assert same_document(page)
    assert polls_pause_while_hidden(page)
    readme_shot = screenshot(page, "dashboard")
    publish(readme_shot, README_IMAGE)
    page.emulate_media(color_scheme="dark")
    screenshot(page, "dashboard-dark")
    page.emulate_media(color_scheme="light")
    phone.goto("/")
    screenshot(phone, "dashboard")

    # Another user: an empty dashboard, and the 404 page on every URL of the tunnel.
    stranger = page_for(other, "bob-pass-123")
    assert "browser-e2e" not in stranger.content()
    for suffix in ("", "edit/", "delete/", "log/"):
        response = stranger.goto(f"/tunnels/{tunnel.uuid}/{suffix}")
        assert response.status == 404, suffix
        assert "browser-e2e" not in stranger.content()

    # Delete, with the confirmation step.
    page.get_by_role("link", name="Delete browser-e2e").click()
    page.get_by_role("button", name="Delete tunnel").click()
    expect()(page.get_by_text("No tunnels yet")).to_be_visible()
    assert not Tunnel.objects.filter(pk=tunnel.pk).exists()
