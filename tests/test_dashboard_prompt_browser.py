"""The login card of an interactive tunnel in headless chromium against a live server.

A user starts an interactive tunnel from its page; when ssh asks (the worker's side played by
tunnels.prompts.begin/ask, as the worker calls them) the card appears without a reload, counts its
seconds down, and the typed answer reaches the worker (prompts.take) without ever being shown.
Screenshot: screenshots/interactive-prompt-1280.png (``TUNNELSITE_UPDATE_DOCS_IMAGES=1`` also refreshes
the README's docs/images/interactive-prompt.png).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import PHONE, publish, screenshot, sqlite_pass_only
from tests.factories import make_tunnel
from tests.interactive_servers import password_sshd
from tests.procs import pool_port
from tests.worker_fixtures import wait_fetch
from tunnels import prompts, services
from tunnels.models import Desired, Tunnel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]

README_IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "interactive-prompt.png"
WAIT_MS = 10_000
SECRET = "Tr0ub4dor&3-browser"


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def seconds_left(page) -> int:
    text = page.locator("[data-countdown]").inner_text()
    match = re.match(r"(\d+) s left", text)
    assert match, text
    return int(match.group(1))


def test_user_answers_the_login_prompt_in_the_browser(page_for, owner, other):
    tunnel = make_tunnel(owner, interactive=True, name="db-via-bastion", remote_host="alice@bastion.example.com")
    page = page_for(owner, "alice-pass-123")
    page.goto(f"/tunnels/{tunnel.uuid}/")
    expect()(page.locator("#tunnel-prompt")).to_be_empty()
    page.get_by_role("button", name="Start", exact=True).click()
    expect()(page.locator("body")).to_contain_text("answer its login prompt on its page")
    assert Tunnel.objects.get(pk=tunnel.pk).desired_state == Desired.RUNNING

    # The worker's ssh asks: the card arrives by itself (no reload) with a password field.
    page.evaluate("window.__sameDocument = true")
    prompts.begin(tunnel.pk, "attempt-1")
    assert prompts.ask(tunnel.pk, "attempt-1", "alice@bastion.example.com's password:", False) is None
    card = page.locator(".login-card")
    expect()(card).to_be_visible(timeout=WAIT_MS)
    assert page.evaluate("window.__sameDocument === true")
    expect()(card).to_contain_text("alice@bastion.example.com's password:")
    field = card.get_by_label("alice@bastion.example.com's password:")
    assert field.get_attribute("type") == "password"
    expect()(page.locator("#tunnel-state .badge")).to_have_text("login prompt", timeout=WAIT_MS)

    # The countdown counts.
    first = seconds_left(page)
    assert 100 <= first <= 120
    page.wait_for_timeout(2_200)
    assert seconds_left(page) <= first - 2

    field.fill(SECRET)
    path = screenshot(page, "interactive-prompt", full_page=False)
    publish(path, README_IMAGE)
    phone = page_for(owner, "alice-pass-123", viewport=PHONE)
    phone.goto(f"/tunnels/{tunnel.uuid}/")
    expect()(phone.locator(".login-card")).to_be_visible()
    screenshot(phone, "interactive-prompt")

    # Another user sees none of it.
    stranger = page_for(other, "bob-pass-123")
    assert stranger.goto(f"/tunnels/{tunnel.uuid}/prompt/").status == 404

    card.get_by_role("button", name="Send").click()
    expect()(page.locator("body")).to_contain_text("Answer sent: tunnel db-via-bastion is logging in")
    assert SECRET not in page.content()
    expect()(page.locator(".login-card")).to_have_count(0)
    assert prompts.take(tunnel.pk, "attempt-1") == SECRET

    # The next question (a one-time code, shown as typed) arrives the same way.
    assert prompts.ask(tunnel.pk, "attempt-1", "Verification code:", True) is None
    expect()(page.locator(".login-card")).to_contain_text("Verification code:", timeout=WAIT_MS)
    assert page.locator("#prompt-answer").get_attribute("type") == "text"


def test_an_expired_prompt_disables_the_form(page_for, owner):
    tunnel = make_tunnel(owner, interactive=True, name="short-lived")
    page = page_for(owner, "alice-pass-123")  # logged in first: on a loaded machine that takes seconds
    prompts.begin(tunnel.pk, "a")
    prompts.ask(tunnel.pk, "a", "Password:", False, timeout=6)
    page.goto(f"/tunnels/{tunnel.uuid}/")
    expect()(page.locator(".login-card")).to_be_visible()
    expect()(page.locator("[data-countdown]")).to_contain_text("Time is up", timeout=WAIT_MS * 2)
    assert page.locator("#prompt-answer").is_disabled()


@pytest.fixture(scope="module")
def pw_sshd(tmp_path_factory):
    with password_sshd(tmp_path_factory.mktemp("pwsshd-browser")) as server:
        yield server


def test_real_login_through_the_browser_runs_the_tunnel(page_for, worker_factory, owner, pw_sshd, target_server):
    """The real worker and password sshd: the question is ssh's own, the typed password logs in."""
    worker_factory()
    port = pool_port()
    data = {
        "name": "browser-login",
        "remote_host": pw_sshd.destination,
        "ssh_port": pw_sshd.port,
        "local_port": str(port),
        "remote_port": f"127.0.0.1:{target_server.port}",
        "interactive": True,
    }
    tunnel = services.create_tunnel(owner, data)
    page = page_for(owner, "alice-pass-123")
    page.goto(f"/tunnels/{tunnel.uuid}/")
    page.get_by_role("button", name="Start", exact=True).click()
    card = page.locator(".login-card")
    expect()(card).to_contain_text(f"{pw_sshd.user}@", timeout=WAIT_MS)  # ssh's own question
    page.locator("#prompt-answer").fill(pw_sshd.password)
    card.get_by_role("button", name="Send").click()
    expect()(page.locator("#tunnel-state .badge")).to_have_text("running", timeout=WAIT_MS * 2)
    assert wait_fetch(port, target_server.greeting)
    assert pw_sshd.password not in page.content()
