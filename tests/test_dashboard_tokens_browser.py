"""The tokens page in headless chromium: a new token is shown once, and only its prefix after a reload.

Screenshots of the page at 1280 and 390 px go to screenshots/tokens-<width>.png.
"""

from __future__ import annotations

import pytest

from accounts import tokens
from accounts.models import ApiToken
from tests.browser import PHONE, screenshot, sqlite_pass_only

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]


def expect():
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def create_token(page, label: str) -> str:
    page.get_by_role("link", name="Tokens").click()
    page.get_by_role("textbox", name="Label").fill(label)
    page.get_by_role("button", name="Create token").click()
    return page.get_by_test_id("new-token").input_value()


def test_new_token_is_shown_once_then_only_its_prefix(page_for, owner):
    page = page_for(owner, "alice-pass-123")
    raw = create_token(page, "deploy script")
    token = tokens.verify(raw)
    assert token is not None and token.user == owner and token.label == "deploy script"
    expect()(page.get_by_text("Copy it now.")).to_be_visible()
    expect()(page.get_by_role("button", name="Copy the new token")).to_be_visible()  # shown by the script
    screenshot(page, "tokens")

    page.reload()
    expect()(page.get_by_test_id("new-token")).to_have_count(0)
    expect()(page.locator(f'tr[data-token="{token.prefix}"]')).to_contain_text(f"{token.prefix}…")
    assert raw not in page.content()
    assert ApiToken.objects.filter(user=owner).count() == 1  # the reload did not send the form again

    phone = page_for(owner, "alice-pass-123", viewport=PHONE)
    phone_raw = create_token(phone, "phone")
    assert tokens.verify(phone_raw) is not None and phone_raw != raw
    screenshot(phone, "tokens")
