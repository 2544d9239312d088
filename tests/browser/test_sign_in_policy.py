"""A passwordless-only deployment in a real browser (sign-in policy ``passwords_allowed = false``):
the sign-in page has no password step and its script still runs the passkey ceremonies; the
account page offers no password; a user who came in by a login link signs in with the passkey."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserUser
from tests.support.live import IDP_BIN, LiveIdp, free_port, idp_env

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]


@pytest.fixture(scope="module")
def passwordless_idp() -> Iterator[LiveIdp]:
    if not IDP_BIN.exists():
        pytest.fail(f"{IDP_BIN} does not exist: install idp into the venv (pip install -e .)")
    with tempfile.TemporaryDirectory(prefix="idp-browser-passwordless-") as tmp:
        directory = Path(tmp)
        (directory / "instance").mkdir()
        port = free_port()
        issuer = f"http://localhost:{port}"
        env = idp_env(directory, issuer) | {"IDP_PASSWORDS_ALLOWED": "false"}
        idp = LiveIdp(
            url=issuer, port=port, directory=directory, env=env, log_path=directory / "server.log"
        )
        idp.run("init")
        idp.start()
        try:
            yield idp
        finally:
            idp.stop()


def test_passwordless_only_signs_in_with_passkeys_and_never_shows_a_password_field(
    passwordless_idp: LiveIdp, new_user: NewUser
) -> None:
    idp = passwordless_idp
    email = "grace@example.com"
    idp.cli("users", "create", email, "--name", "Grace", "--json")
    url = idp.cli("login-link", email, "--json")["url"]

    user = new_user(conditional_mediation=False)
    page = user.page
    page.goto(url)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#backup-codes li")).to_have_count(10)
    page.get_by_role("button", name="I saved them").click()
    expect(page).to_have_url(f"{idp.url}/account")
    expect(page.locator("#passwordless-note")).to_be_visible()
    expect(page.locator("#new-password")).to_have_count(0)
    user.screenshot("1-account")
    page.get_by_role("button", name="Sign out", exact=True).click()

    page.goto(f"{idp.url}/login")
    expect(page.locator("#password")).to_have_count(0)
    expect(page.get_by_role("button", name="Use your password instead")).to_have_count(0)
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    user.screenshot("2-login")
    # Email first: "Continue" runs the passkey ceremony for that account.
    page.fill("#email", email)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{idp.url}/account")

    # Another browser, without the passkey: the ceremony fails, and still no password step.
    stranger = new_user(conditional_mediation=False)
    stranger.page.goto(f"{idp.url}/login")
    stranger.page.fill("#email", email)
    stranger.page.get_by_role("button", name="Continue").click()
    expect(stranger.page.locator("#form-errors .error")).to_contain_text("No passkey was used")
    expect(stranger.page.locator("#form-errors .error")).not_to_contain_text("password")
    expect(stranger.page.locator("#password")).to_have_count(0)
    stranger.screenshot("3-no-passkey")
