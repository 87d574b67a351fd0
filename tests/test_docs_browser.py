"""The API docs in headless chromium, offline: Swagger UI and ReDoc render their operations.

Every request to a host other than the live server is aborted and recorded, so a
page that still reaches for a CDN or a font service fails the test even though
it might render without it. Screenshots of both pages at 1280 px (the first screen:
the pages are long) go to screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.browser import DESKTOP, TIMEOUT_MS, screenshot, sqlite_pass_only

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


@pytest.fixture
def offline(browser, live_server, settings) -> Iterator[tuple[object, list[str], list[str]]]:
    """An anonymous page (the docs are public by default) whose off-site requests are aborted and
    listed, with the console errors and page errors it logged."""
    settings.DOCS_PUBLIC = True
    site = urlsplit(live_server.url).netloc
    off_site: list[str] = []
    errors: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        # data: and blob: URLs never reach the network; anything with another host would.
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).netloc != site:
            off_site.append(url)
            request_route.abort()
        else:
            request_route.continue_()

    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: errors.append(f"failed to load {req.url}"))
    try:
        yield page, off_site, errors
    finally:
        context.close()


def test_swagger_ui_renders_operations_offline(offline):
    page, off_site, errors = offline
    page.goto("/api/docs/")
    operations = page.locator(".opblock", has=page.locator(".opblock-summary-path", has_text="/api/v1/tunnels/"))
    expect()(operations.first).to_be_visible()
    assert operations.count() >= 2  # at least the list's GET and POST
    expect()(page.locator(".opblock-summary-method", has_text="DELETE").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "api-docs", full_page=False)
    assert off_site == []
    assert errors == []


def test_redoc_renders_operations_offline(offline):
    page, off_site, errors = offline
    page.goto("/api/redoc/")
    expect()(page.locator("h1", has_text="tunnelsite API").first).to_be_visible()
    # The sidebar's tag, an operation's heading in the middle panel and its path in the right one.
    expect()(page.get_by_role("menuitem", name="tunnels", exact=True)).to_be_visible()
    expect()(page.locator("h2").filter(has_text="tunnel").first).to_be_visible()
    expect()(page.get_by_text("/api/v1/tunnels/", exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    screenshot(page, "api-redoc", full_page=False)
    assert off_site == []
    assert errors == []
