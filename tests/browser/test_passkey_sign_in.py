"""Passkeys in a real browser: enrolment on the account page, autofill, the passkey button,
email-first, the password fallback, and a removed passkey (the sign-in walk)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    Accounts,
    BrowserUser,
    RelyingParty,
)
from tests.support.events import wait_for
from tests.support.live import LiveIdp

# One worker under xdist (--dist loadgroup): the module shares one live idp and one browser.
pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]
OPTIONS_PATH = "/login/passkey/options"
VERIFY_PATH = "/login/passkey/verify"
PASSKEY_AMR = {"hwk", "swk"}


def b64url(standard_base64: str) -> str:
    """DevTools gives credential ids in standard base64; idp uses base64url (no padding)."""
    return standard_base64.replace("+", "-").replace("/", "_").rstrip("=")


def _sign_in_with_password(page: Page, email: str) -> None:
    """On the login page: leave the email step for the password, then submit."""
    page.get_by_role("button", name="Use your password instead").click()
    expect(page.locator("#password")).to_be_visible()
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _add_passkey(user: BrowserUser, name: str = "") -> None:
    """On the account page: create a passkey and wait for the reloaded list to show it."""
    page = user.page
    items = page.locator("#passkey-list .passkey-item")
    before = items.count()
    if name:
        page.fill("#passkey-name", name)
    page.get_by_role("button", name="Add a passkey").click()
    # The first sign-in method beyond the password may come with backup codes, shown once.
    saved = page.get_by_role("button", name="I saved them")
    expect(items.nth(before).or_(saved)).to_be_visible()
    if saved.is_visible():
        saved.click()
    expect(items).to_have_count(before + 1)
    assert len(user.credentials()) == before + 1


def _enrol(live_idp: LiveIdp, accounts: Accounts, new_user: NewUser) -> tuple[str, dict[str, Any]]:
    """A user created with a password adds a passkey; returns the email and the credential
    exported from the authenticator (to import it into other browser profiles)."""
    email = accounts.new()
    user = new_user()
    user.page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(user.page, email)
    expect(user.page).to_have_url(f"{live_idp.url}/account")
    _add_passkey(user)
    [credential] = user.credentials()
    user.context.close()
    return email, credential


def _with_passkey(new_user: NewUser, credential: dict[str, Any], **options: Any) -> BrowserUser:
    user = new_user(**options)
    user.add_credential(credential)
    return user


def _wait_until(condition: Callable[[], bool], message: str) -> None:
    """The browser acts in its own process: wait for it (tests.support.events), however slow
    the machine is."""
    wait_for(condition, message)


def _assert_passkey_sign_in(claims: dict[str, Any]) -> None:
    amr = set(claims["amr"])
    assert {"user", "mfa"} <= amr, claims
    assert len(amr & PASSKEY_AMR) == 1, claims
    assert claims["acr"] in {"phr", "phrh"}, claims


def test_add_a_passkey_on_the_account_page(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    email = accounts.new()
    user = new_user()
    page = user.page

    page.goto(f"{live_idp.url}/account")
    expect(page).to_have_url(f"{live_idp.url}/login?next=/account")
    expect(page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
    expect(page.locator("#password")).to_be_hidden()  # email first
    user.screenshot("1-login")
    _sign_in_with_password(page, email)

    expect(page).to_have_url(f"{live_idp.url}/account")
    expect(page.locator("#no-passkeys")).to_be_visible()
    user.screenshot("2-account-empty")

    _add_passkey(user, name="Test laptop")
    item = page.locator("#passkey-list .passkey-item")
    expect(item).to_have_count(1)
    expect(item.locator(".passkey-name")).to_have_text("Test laptop")
    [credential] = user.credentials()
    assert credential["isResidentCredential"] is True
    assert item.get_attribute("data-credential-id") == b64url(credential["credentialId"])
    user.screenshot("3-account-with-passkey")

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert "idp_session" not in {c["name"] for c in user.context.cookies()}

    # Signed out, /account sends the browser to the login page, where the passkey autofill
    # (answered at once by the virtual authenticator) signs it back in and returns to /account.
    page.goto(f"{live_idp.url}/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    assert f"{live_idp.url}/login?next=/account" in user.requests
    assert user.count(VERIFY_PATH) == 1


def test_passkey_autofill_signs_in_to_the_relying_party(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    _, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential)
    authorization = relying_party.authorization()

    # Headless Chromium's virtual authenticator answers a conditional request at once when it
    # holds a matching credential: the autofill completes the sign-in without a click.
    user.page.goto(authorization.url)
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")
    user.screenshot("callback")

    claims = relying_party.redeem(authorization)
    _assert_passkey_sign_in(claims)
    # The page carries the request options, and the verify answers with the redirect URI and
    # the code: no options request, no detour through /authorize/continue.
    assert user.count(OPTIONS_PATH) == 0, user.requests
    assert user.count(VERIFY_PATH) == 1
    assert not any("/authorize/continue/" in url for url in user.requests), user.requests


def test_passkey_button_signs_in(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    _, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential, conditional_mediation=False)
    authorization = relying_party.authorization()

    user.page.goto(authorization.url)
    expect(user.page.get_by_text("to continue to Browser RP")).to_be_visible()
    user.screenshot("login")
    user.page.get_by_role("button", name="Sign in with a passkey").click()
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")

    _assert_passkey_sign_in(relying_party.redeem(authorization))
    assert user.count(OPTIONS_PATH) == 0, user.requests  # the page's own options


#: A credential as some credential managers' browser extensions hand it back: the fields copied
#: onto plain objects whose prototypes are the browser's, so that the prototype's ``toJSON`` (and
#: any getter not copied, ``authenticatorAttachment``) throws "Illegal invocation".
EXTENSION_CREDENTIAL = """
(() => {
  const real = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = async (options) => {
    const c = await real(options);
    const r = c.response;
    const response = Object.setPrototypeOf({
      clientDataJSON: r.clientDataJSON, authenticatorData: r.authenticatorData,
      signature: r.signature, userHandle: r.userHandle,
    }, AuthenticatorAssertionResponse.prototype);
    const extensions = c.getClientExtensionResults();
    return Object.setPrototypeOf({
      id: c.id, rawId: c.rawId, type: c.type, response,
      getClientExtensionResults: () => extensions,
    }, PublicKeyCredential.prototype);
  };
})();
"""


def test_a_credential_whose_to_json_throws_still_signs_in(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    """WebAuthn L3 5.1.10 ``toJSON`` where the credential has a working one; a credential
    manager's extension whose credential inherits it and throws (or lacks a getter) is
    serialised field by field, as in a browser without ``toJSON``, and signs in."""
    _, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential, conditional_mediation=False)
    user.context.add_init_script(EXTENSION_CREDENTIAL)
    authorization = relying_party.authorization()

    user.page.goto(authorization.url)
    user.page.get_by_role("button", name="Sign in with a passkey").click()
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")
    _assert_passkey_sign_in(relying_party.redeem(authorization))


def test_email_first_signs_in_with_the_passkey(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    email, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential, conditional_mediation=False)
    authorization = relying_party.authorization()

    user.page.goto(authorization.url)
    user.page.fill("#email", email)
    user.page.get_by_role("button", name="Continue").click()
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")

    _assert_passkey_sign_in(relying_party.redeem(authorization))
    assert user.count(OPTIONS_PATH) == 0, user.requests  # the page's own options


def test_without_a_passkey_the_password_is_the_calm_fallback(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    email = accounts.new()
    user = new_user()  # its authenticator holds no credential: the autofill finds nothing
    authorization = relying_party.authorization()

    user.page.goto(authorization.url)
    expect(user.page.get_by_role("button", name="Use your password instead")).to_be_visible()
    user.page.get_by_role("button", name="Use your password instead").click()
    expect(user.page.locator("#password")).to_be_visible()
    expect(user.page.locator("#email")).to_be_focused()  # the first empty field
    user.page.keyboard.type(email)
    user.page.keyboard.press("Tab")
    expect(user.page.locator("#password")).to_be_focused()
    user.page.fill("#password", PASSWORD)
    user.screenshot("password-step")
    user.page.get_by_role("button", name="Sign in", exact=True).click()
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")

    claims = relying_party.redeem(authorization)
    assert claims["amr"] == ["pwd"]
    # The failed or abandoned autofill is not retried in a loop.
    assert user.count(OPTIONS_PATH) <= 2, user.requests
    assert user.count(VERIFY_PATH) == 0


def test_a_removed_passkey_no_longer_signs_in(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    email = accounts.new()
    owner = new_user()
    owner.page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(owner.page, email)
    _add_passkey(owner, name="Old phone")
    [credential] = owner.credentials()
    # Removing a sign-in method needs a recent sign-in at least as strong as the user's strongest
    # method (step-up): a passkey now. idp sends the user to sign in again; the passkey autofill
    # answers at once and the removal's question comes back (its confirmation page).
    with owner.page.expect_navigation(url=re.compile(r"/login\?")):
        owner.page.get_by_role("button", name="Remove Old phone").click()
    owner.page.wait_for_url(re.compile(r"/account/passkeys/.+/remove$"))
    owner.page.get_by_role("button", name="Remove passkey").click()  # the confirmation page
    # This browser's step-up signed in with it: signed out here too, told why, on the sign-in
    # page, whose autofill does not offer the removed passkey (the credential manager was told
    # first, WebAuthn L3 5.1.10): no refused assertion, no console error.
    expect(owner.page.get_by_text("You had signed in with it in this browser")).to_be_visible()
    expect(owner.page).to_have_url(re.compile(r"/login\?"))
    if owner.page.evaluate("typeof PublicKeyCredential.signalUnknownCredential === 'function'"):
        _wait_until(lambda: owner.credentials() == [], "the removed passkey stayed offered")
    owner.screenshot("removed-here")

    user = _with_passkey(new_user, credential, conditional_mediation=False)
    user.allow_console_error(r"status of 400")  # the refused assertion
    authorization = relying_party.authorization()
    user.page.goto(authorization.url)
    user.page.get_by_role("button", name="Sign in with a passkey").click()

    expect(user.page.get_by_role("alert")).to_have_text(
        "That passkey didn't work. Try again, sign in with your password if you have one, "
        "or choose “Can't access your account?” below."
    )
    expect(user.page.locator("#password")).to_be_visible()
    user.screenshot("failure")
    for label, size in (("phone", PHONE["viewport"]), ("desktop", DESKTOP["viewport"])):
        user.page.set_viewport_size(size)
        user.screenshot(f"failure-{label}")
    user.page.set_viewport_size({"width": 800, "height": 900})
    assert relying_party.callbacks_for(authorization.state) == []
    assert user.count(VERIFY_PATH) == 1
    # Signal API: the server said no account owns the credential, so the browser forgets it.
    if user.page.evaluate("typeof PublicKeyCredential.signalUnknownCredential === 'function'"):
        _wait_until(lambda: user.credentials() == [], "the authenticator kept the credential")

    # The password path is open on the same page (what follows a correct password depends on
    # the account's other factors; the fallback test walks it to the relying party).
    expect(user.page.locator("#email")).to_be_focused()
    expect(user.page.get_by_role("button", name="Sign in", exact=True)).to_be_enabled()
    # The page's challenge went with the refused answer: trying again asks for a fresh one.
    assert user.count(OPTIONS_PATH) == 0, user.requests
    user.page.get_by_role("button", name="Sign in with a passkey").click()
    _wait_until(lambda: user.count(OPTIONS_PATH) == 1, "the retry asked for no fresh options")
