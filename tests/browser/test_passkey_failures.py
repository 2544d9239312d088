"""A passkey ceremony that goes wrong after the user acted: the session gone, the answer lost on
the way, the page left open past its challenge's lifetime. Each ends on a usable page that says
what happened (docs/users/passkeys.md, docs/users/managing-sign-in-methods.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Route, expect

from tests.browser.conftest import Accounts, BrowserUser, RelyingParty
from tests.browser.test_passkey_sign_in import (
    OPTIONS_PATH,
    VERIFY_PATH,
    _assert_passkey_sign_in,
    _enrol,
    _sign_in_with_password,
    _with_passkey,
    b64url,
)
from tests.support.events import wait_for
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]

#: Records every navigator.credentials.get the page makes: its mediation and challenge.
RECORD_GETS = """
(() => {
  window.__gets = [];
  const real = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = (options) => {
    const pk = options && options.publicKey;
    const bytes = pk && pk.challenge ? new Uint8Array(pk.challenge) : new Uint8Array();
    window.__gets.push({
      mediation: (options && options.mediation) || null,
      challenge: btoa(String.fromCharCode(...bytes)),
    });
    return real(options);
  };
})();
"""
OFFLINE = r"ERR_INTERNET_DISCONNECTED|Failed to load resource"
#: The autofill's requests after the first reach the authenticator once the test calls
#: ``window.__pick()``: the virtual authenticator answers a conditional request with the
#: credentials it holds when the request starts, so a passkey the user picks later is one the
#: test adds first.
PICK_LATER = """
(() => {
  let pick;
  const picked = new Promise((resolve) => { pick = resolve; });
  window.__pick = () => pick();
  let conditional = 0;
  const real = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = async (options) => {
    if (options && options.mediation === "conditional" && ++conditional > 1) await picked;
    return real(options);
  };
})();
"""


def test_adding_a_passkey_after_the_session_ended_signs_in_again(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """Signed out in another tab, the account page's "Add a passkey" leads to the sign-in page
    (and back), not to "You can try again", which could never work."""
    email = accounts.new()
    user = new_user(conditional_mediation=False)
    user.allow_console_error(r"status of 401")
    page = user.page
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")
    other = user.context.new_page()
    other.goto(f"{live_idp.url}/account")
    other.get_by_role("button", name="Sign out", exact=True).click()
    expect(other.get_by_role("heading", name="You are signed out")).to_be_visible()
    other.close()

    page.bring_to_front()
    page.get_by_role("button", name="Add a passkey").click()
    expect(page).to_have_url(f"{live_idp.url}/login?next=/account?resume%3Dadd-passkey")
    user.screenshot("signed-out-elsewhere")
    # Signed in again, the page is ready to add the passkey.
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")
    expect(page.locator("#passkey-resume")).to_be_visible()


#: Records the page's signalUnknownCredential calls (whether or not the browser has the method).
RECORD_UNKNOWN = """
(() => {
  window.__unknown = [];
  PublicKeyCredential.signalUnknownCredential = async (options) => {
    window.__unknown.push(options);
  };
})();
"""


def test_a_passkey_idp_refused_to_store_is_forgotten_by_the_credential_manager(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The authenticator made the passkey and idp refused to store it (here its challenge is
    not one idp issued): the page tells the credential manager the credential is unknown
    (WebAuthn L3 5.1.10), so that the autofill does not offer a passkey that signs nobody in."""
    email = accounts.new()
    user = new_user(conditional_mediation=False)
    user.allow_console_error(r"status of 400")
    user.context.add_init_script(RECORD_UNKNOWN)
    page = user.page
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")

    def tamper(route: Route) -> None:
        body = json.loads(route.request.post_data or "{}")
        body["challenge_id"] = "not-one-idp-issued"
        route.continue_(post_data=json.dumps(body))

    page.route(f"{live_idp.url}/account/passkeys", tamper)
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("The passkey was not added")
    [credential] = user.credentials()  # the authenticator holds it; idp does not
    wait_for(lambda: page.evaluate("window.__unknown.length") == 1, "no signal was sent")
    [signal] = page.evaluate("window.__unknown")
    assert signal == {"rpId": "localhost", "credentialId": b64url(credential["credentialId"])}


def test_an_autofill_answer_that_never_reached_idp_is_said(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The user picked a passkey in the autofill and the answer was lost on the way: the page
    says so and offers the password, instead of staying silent."""
    _, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential)  # conditional mediation on: the autofill answers
    user.allow_console_error(OFFLINE)
    page = user.page
    page.route(f"**{VERIFY_PATH}", lambda route: route.abort("internetdisconnected"))
    with page.expect_request(f"**{VERIFY_PATH}"):
        page.goto(f"{live_idp.url}/login")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("did not reach idp")
    expect(page.locator("#password")).to_be_visible()
    user.screenshot("autofill-offline")


def test_a_button_answer_that_never_reached_idp_does_not_say_no_passkey_was_used(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """ "No passkey was used" means a cancelled dialog (docs/users/passkeys.md); a passkey that
    was used and whose answer was lost gets its own message."""
    _, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential, conditional_mediation=False)
    user.allow_console_error(OFFLINE)
    page = user.page
    page.route(f"**{VERIFY_PATH}", lambda route: route.abort("internetdisconnected"))
    page.goto(f"{live_idp.url}/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("did not reach idp")
    assert user.count(VERIFY_PATH) == 1
    assert "No passkey was used" not in alert.inner_text()
    user.screenshot("button-offline")


def test_a_second_step_answer_that_never_reached_idp_does_not_say_no_passkey_was_used(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The second step after a password, "Use a passkey": as on the sign-in page, a passkey
    that was used and whose answer was lost is not a cancelled dialog ("No passkey was used");
    back online, the button signs in."""
    email, credential = _enrol(live_idp, accounts, new_user)
    user = _with_passkey(new_user, credential, conditional_mediation=False)
    user.allow_console_error(OFFLINE)
    page = user.page
    page.goto(f"{live_idp.url}/login")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/login/second-step")
    page.route(f"**{VERIFY_PATH}", lambda route: route.abort("internetdisconnected"))
    page.get_by_role("button", name="Use a passkey").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("did not reach idp")
    assert user.count(VERIFY_PATH) == 1
    assert "No passkey was used" not in alert.inner_text()

    # Back online, the same button tries again and the passkey finishes the sign-in.
    page.unroute(f"**{VERIFY_PATH}")
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(f"{live_idp.url}/account")


def test_the_autofill_is_renewed_before_its_challenge_expires(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """The autofill request waits as long as the page is open; its challenge lives 5 minutes
    (the options' timeout). Before it expires the request is replaced by one with fresh
    options, so a passkey picked later is answered with a live challenge."""
    user = new_user()  # no credential: the autofill request waits, as for a user yet to pick
    page = user.page
    user.context.add_init_script(RECORD_GETS)
    page.clock.install()
    page.goto(f"{live_idp.url}/login")
    wait_for(lambda: len(page.evaluate("window.__gets")) == 1, "no autofill request started")
    page.clock.fast_forward("06:00")
    wait_for(lambda: len(page.evaluate("window.__gets")) == 2, "the autofill was not renewed")
    first, renewed = page.evaluate("window.__gets")
    assert (first["mediation"], renewed["mediation"]) == ("conditional", "conditional")
    assert first["challenge"] != renewed["challenge"]
    assert user.count(OPTIONS_PATH) == 1  # fresh options: the page's own had expired


def test_the_autofill_is_renewed_after_the_computer_slept_past_its_challenge(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """A timer does not count the time a computer sleeps (Chromium's timers run on a monotonic
    clock that stops in suspend), so the renewal's one long timer fired minutes after the wake,
    while the autofill offered a passkey whose challenge had expired: picked, it was refused and
    the page said the passkey did not work. The page reads the wall clock every few seconds:
    soon after the wake the request is renewed with fresh options."""
    user = new_user()  # no credential: the autofill request waits, as for a user yet to pick
    page = user.page
    user.context.add_init_script(RECORD_GETS)
    page.clock.install()
    page.goto(f"{live_idp.url}/login")
    wait_for(lambda: len(page.evaluate("window.__gets")) == 1, "no autofill request started")
    # Asleep for 6 minutes: the wall clock moves on, no timer runs.
    page.clock.set_system_time(page.evaluate("Date.now()") + 6 * 60 * 1000)
    page.clock.run_for("00:20")  # awake again for 20 s
    wait_for(lambda: len(page.evaluate("window.__gets")) == 2, "the autofill was not renewed")
    first, renewed = page.evaluate("window.__gets")
    assert (first["mediation"], renewed["mediation"]) == ("conditional", "conditional")
    assert first["challenge"] != renewed["challenge"]
    assert user.count(OPTIONS_PATH) == 1  # fresh options: the page's own had expired


def test_the_autofill_is_renewed_when_the_user_comes_back_to_the_email_field(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """Back from a sleep past the challenge's lifetime, the user goes to the email field (where
    the autofill offers passkeys) before the next check of the wall clock: the page checks then,
    and the request is renewed at once."""
    user = new_user()
    page = user.page
    user.context.add_init_script(RECORD_GETS)
    page.clock.install()
    page.goto(f"{live_idp.url}/login")
    wait_for(lambda: len(page.evaluate("window.__gets")) == 1, "no autofill request started")
    page.locator("#email").blur()
    page.clock.set_system_time(page.evaluate("Date.now()") + 6 * 60 * 1000)  # asleep, no timer
    page.locator("#email").focus()
    # At once, not at the next check of the wall clock (every 15 s).
    deadline = time.monotonic() + 5
    while len(page.evaluate("window.__gets")) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(page.evaluate("window.__gets")) == 2, "the autofill was not renewed at once"
    assert user.count(OPTIONS_PATH) == 1


def test_the_autofill_works_again_after_a_cancelled_button_ceremony(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    """The button's dialog aborts the autofill's request first. Cancelled (no passkey answered
    it), the autofill is offered again without a reload: not a retry, the request waits for the
    user to pick a passkey, and the one picked then signs in."""
    _, credential = _enrol(live_idp, accounts, new_user)
    user = new_user()  # no credential yet: the autofill waits and the button's dialog finds none
    page = user.page
    user.context.add_init_script(PICK_LATER)
    user.context.add_init_script(RECORD_GETS)  # outside PICK_LATER: each request when it is made
    authorization = relying_party.authorization()
    page.goto(authorization.url)
    wait_for(lambda: len(page.evaluate("window.__gets")) == 1, "no autofill request started")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("No passkey was used")
    user.screenshot("button-cancelled")
    wait_for(lambda: len(page.evaluate("window.__gets")) == 3, "the autofill was not offered again")
    assert [g["mediation"] for g in page.evaluate("window.__gets")] == [
        "conditional", None, "conditional",
    ]  # fmt: skip

    # The user picks the passkey in the autofill: it signs in, on the same page.
    user.add_credential(credential)
    page.evaluate("window.__pick()")
    page.wait_for_url(f"{relying_party.redirect_uri}?*")
    _assert_passkey_sign_in(relying_party.redeem(authorization))
    assert user.count(VERIFY_PATH) == 1
