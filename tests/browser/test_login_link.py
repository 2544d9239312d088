"""A one-time login link in a real browser: opening it spends nothing, confirming signs in and
asks for a new passkey before anything else, and the link never works twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Accounts, BrowserUser, RelyingParty, add_first_passkey
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]


def test_a_login_link_leads_to_a_new_passkey_and_works_once(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    email = accounts.new()
    url = live_idp.cli("login-link", email, "--json")["url"]

    # A mail scanner (or the user) opening the link spends nothing.
    scanner = new_user()
    scanner.page.goto(url)
    expect(scanner.page.get_by_role("heading", name=f"Sign in as {email}?")).to_be_visible()
    scanner.context.close()

    user = new_user()
    page = user.page
    page.goto(url)
    user.screenshot("1-confirm")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_idp.url}/account/recover")
    # The only way forward is a new sign-in method.
    page.goto(f"{live_idp.url}/account")
    expect(page).to_have_url(f"{live_idp.url}/account/recover")
    # The account's first passkey comes with backup codes, shown once; the page's "add a passkey
    # before you continue" is gone with them, as it no longer applies.
    instruction = page.get_by_text("Before you continue, add a passkey")
    expect(instruction).to_be_visible()

    def codes_shown() -> None:
        expect(instruction).to_be_hidden()
        expect(page.get_by_role("heading", name="Passkey added", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="Save your backup codes")).to_be_visible()
        user.screenshot("2-codes")

    add_first_passkey(page, live_idp, on_codes=codes_shown)
    expect(page.locator("#passkey-list .passkey-item")).to_have_count(1)
    user.screenshot("3-account")

    # A second use of the link fails, in any browser.
    again = new_user()
    again.allow_console_error(r"status of 400")
    again.page.goto(url)
    expect(
        again.page.get_by_role("heading", name="This sign-in link does not work")
    ).to_be_visible()

    # And the new passkey signs in to a relying party.
    page.get_by_role("button", name="Sign out", exact=True).click()
    authorization = relying_party.authorization()
    page.goto(authorization.url)
    page.wait_for_url(f"{relying_party.redirect_uri}?*")
    assert relying_party.callbacks_for(authorization.state)
