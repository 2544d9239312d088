"""The account portal in a real browser: two passkeys, renamed and removed; the last way in that
cannot be removed; a session signed out from another browser; connected apps, activity and
profile; no console errors on any portal page (docs/users/managing-sign-in-methods.md).

The screenshots of the user guide come from here: ``UPDATE_DOCS_IMAGES=1`` also writes them to
docs/users/images/ (off by default, so that a test run leaves the working tree clean)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import (
    PASSWORD,
    TEXT_LINES,
    Accounts,
    BrowserUser,
    RelyingParty,
    fits_viewport,
)
from tests.browser.conftest import PHONE as PHONE_DEVICE
from tests.browser.test_passkey_sign_in import (
    _add_passkey,
    _sign_in_with_password,
    _wait_until,
    _with_passkey,
    b64url,
)
from tests.support.live import LiveIdp

# One worker under xdist (--dist loadfile): the module shares the live idp and one browser.
pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "users" / "images"
#: (path, the page's heading, its tab in the portal's navigation)
PORTAL_PAGES = [
    ("/account", "Your account", "Sign-in methods"),
    ("/account/sessions", "Where you're signed in", "Sessions"),
    ("/account/apps", "Connected apps", "Connected apps"),
    ("/account/activity", "Security activity", "Activity"),
    ("/account/profile", "Profile", "Profile"),
]
#: A passkey in a credential manager that syncs it (backup eligible and backed up).
SYNCED_AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
    "defaultBackupEligibility": True,
    "defaultBackupState": True,
}
#: A security key: device-bound (not backup eligible).
SECURITY_KEY = {**SYNCED_AUTHENTICATOR, "transport": "usb",
                "defaultBackupEligibility": False, "defaultBackupState": False}  # fmt: skip


# -- helpers --------------------------------------------------------------------------------------
def _use_authenticator(user: BrowserUser, options: dict[str, Any]) -> str:
    """Replace the context's virtual authenticator by one with these options; its id."""
    user.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": user.authenticator_id})
    user.authenticator_id = _plug_in(user, options)
    return user.authenticator_id


def _plug_in(user: BrowserUser, options: dict[str, Any]) -> str:
    """One more virtual authenticator in the context (a security key next to the platform's)."""
    added = user.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})
    return str(added["authenticatorId"])


def _credentials_of(user: BrowserUser, authenticator_id: str) -> list[dict[str, Any]]:
    result = user.cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return list(result["credentials"])


def _stepped_up(page: Page, idp: LiveIdp, action: Locator) -> None:
    """The action asks for a recent passkey sign-in first (step-up): idp sends the browser to
    the login page, where the passkey autofill answers at once and returns to /account."""
    with page.expect_navigation(url=re.compile(r"/login\?next=")):
        action.click()
    # "Add a passkey" comes back to /account?resume=add-passkey, which account.js makes /account.
    page.wait_for_url(f"{idp.url}/account")


def _flash(page: Page) -> Locator:
    return page.locator(".flashes p")


def _signed_in(
    new_user: NewUser, idp: LiveIdp, email: str, device: dict[str, Any] | None = None
) -> BrowserUser:
    """A new browser profile (``device``: its context options) signed in with the password on
    /account."""
    user = new_user(device=device)
    user.like_desktop_chrome()
    user.page.goto(f"{idp.url}/account")
    _sign_in_with_password(user.page, email)
    expect(user.page).to_have_url(f"{idp.url}/account")
    return user


# -- sign-in methods ------------------------------------------------------------------------------
def test_two_passkeys_one_renamed_one_removed(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    email = accounts.new()
    owner = new_user()
    owner.like_desktop_chrome()
    page = owner.page
    synced = _use_authenticator(owner, SYNCED_AUTHENTICATOR)
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")

    items = page.locator("#passkey-list .passkey-item")
    _add_passkey(owner, name="Phone")
    expect(page.locator("#second-passkey-nudge")).to_be_visible()
    assert len(_credentials_of(owner, synced)) == 1

    # A second passkey on a security key. The password session no longer suffices: adding a
    # method next to a passkey needs a passkey sign-in (step-up), then the button works. The
    # security key is plugged in after the step-up: with two virtual authenticators, headless
    # Chromium's autofill does not answer on its own.
    owner.allow_console_error(r"status of 403 .*/account/passkeys/options")  # the step-up's
    add = page.get_by_role("button", name="Add a passkey")
    _stepped_up(page, live_idp, add)
    key = _plug_in(owner, SECURITY_KEY)
    add.click()
    expect(items).to_have_count(2)
    [security_key] = _credentials_of(owner, key)
    assert items.nth(1).get_attribute("data-credential-id") == b64url(security_key["credentialId"])
    expect(items.nth(0)).to_contain_text("Synced")
    expect(items.nth(0)).to_contain_text("last used")
    expect(items.nth(1)).to_contain_text("This device only")
    expect(items.nth(1)).to_contain_text("never used")

    # Rename through the inline form.
    # Unrecognised, the key was named after the browser, system and day: renamed here.
    expect(items.nth(1).locator(".passkey-name")).to_contain_text("Chrome on Linux, ")
    items.nth(1).get_by_label(re.compile("^New name for Chrome on Linux")).fill("Security key")
    items.nth(1).get_by_role("button", name="Rename").click()
    expect(_flash(page)).to_have_text("Passkey renamed.")
    expect(items.locator(".passkey-name")).to_have_text(["Phone", "Security key"])
    expect(page.locator("#second-passkey-nudge")).to_have_count(0)
    expect(page.locator("#offer-sign-out-others")).to_have_count(0)
    owner.document("sign-in-methods", DOCS_IMAGES)

    # Remove the security key: the passkey sign-in above is recent enough; it asks first. (Not
    # the phone's passkey, which signed this browser in: removing that signs the browser out,
    # tests/functional/test_passkey_removal_sessions.py.)
    page.get_by_role("button", name="Remove Security key").click()
    expect(page.get_by_role("heading", name="Remove the passkey “Security key”?")).to_be_visible()
    page.get_by_role("button", name="Remove passkey").click()
    expect(_flash(page)).to_have_text("Passkey removed.")
    expect(items.locator(".passkey-name")).to_have_text(["Phone"])
    expect(page.locator("#second-passkey-nudge")).to_be_visible()
    # Each sign-in in this browser ended the one before: no other session to offer to end.
    expect(page.locator("#offer-sign-out-others")).to_have_count(0)
    # Signal API: the page lists the accepted credentials; the browser forgets the others.
    if page.evaluate("typeof PublicKeyCredential.signalAllAcceptedCredentials === 'function'"):
        _wait_until(lambda: _credentials_of(owner, key) == [], "the removed passkey stayed")
        assert len(_credentials_of(owner, synced)) == 1

    # The removed credential, imported into another browser, no longer signs in.
    other = _with_passkey(new_user, security_key, conditional_mediation=False)
    other.allow_console_error(r"status of 400")  # the refused assertion
    other.page.goto(f"{live_idp.url}/account")
    other.page.get_by_role("button", name="Sign in with a passkey").click()
    expect(other.page.get_by_role("alert")).to_have_text(
        "That passkey didn't work. Try again, sign in with your password if you have one, "
        "or choose “Can't access your account?” below."
    )
    expect(other.page).to_have_url(f"{live_idp.url}/login?next=/account")


DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _at_both_sizes(user: BrowserUser, step: str) -> None:
    """A screenshot at 1280x800 and at a 390 px phone, each checked to fit; back to desktop."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        user.page.set_viewport_size(size)
        fits_viewport(user.page)
        user.screenshot(f"{step}-{label}")
    user.page.set_viewport_size(DESKTOP)


def test_first_passkey_codes_default_name_and_a_device_that_holds_one_already(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The first passkey's backup codes come with Download, Copy and Print and a heading that
    says the passkey is added; an unrecognised passkey is named after the browser, system and
    day; the same device again is refused with what happened (InvalidStateError); removing
    asks first, and Cancel keeps it."""
    user = _signed_in(new_user, live_idp, accounts.new())
    page = user.page
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Add a passkey").click()
    codes = page.locator("#passkey-status .backup-codes")
    expect(codes.locator("#backup-codes li")).to_have_count(10)
    expect(
        page.get_by_role("heading", name="Passkey added: save your backup codes")
    ).to_be_visible()
    for control in ("Download", "Copy", "Print"):
        expect(codes.get_by_text(control, exact=True)).to_be_visible()
    for control in ("Copy", "Print"):  # served disabled, enabled once backup_codes.js wired them
        expect(codes.get_by_role("button", name=control)).to_be_enabled()
    assert str(codes.get_by_text("Download").get_attribute("href")).startswith("data:text/plain")
    _at_both_sizes(user, "first-passkey-codes")
    page.get_by_role("button", name="I saved them").click()

    name = page.locator("#passkey-list .passkey-name")
    expect(name).to_have_text(re.compile(r"^Chrome on Linux, \d{1,2} [A-Z][a-z]{2} \d{4}$"))
    expect(_flash(page)).to_contain_text("Give it a name you will recognise")

    # The same authenticator again: it holds a passkey for this account (excludeCredentials),
    # so the browser refuses with InvalidStateError, and the page says exactly that.
    user.allow_console_error(r"status of 403 .*/account/passkeys/options")  # the step-up's
    add = page.get_by_role("button", name="Add a passkey")
    _stepped_up(page, live_idp, add)
    add.click()
    expect(page.locator("#passkey-status [role=alert]")).to_have_text(
        "This device already has a passkey for this account: you can sign in with it. "
        "To add another, use a different device, phone or security key."
    )
    _at_both_sizes(user, "same-device-again")
    assert len(user.credentials()) == 1

    # Removing asks first, on a page that works without JavaScript; Cancel keeps the passkey.
    page.locator("#passkey-list").get_by_role("button", name=re.compile("^Remove ")).click()
    expect(page.get_by_role("heading", name=re.compile("^Remove the passkey"))).to_be_visible()
    _at_both_sizes(user, "confirm-remove-passkey")
    page.get_by_role("link", name="Cancel").click()
    expect(page).to_have_url(f"{live_idp.url}/account")
    expect(name).to_have_count(1)


def test_on_a_phone_a_passkey_rename_field_takes_the_row_and_default_names_differ(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """At 390 px the rename field sat beside Remove and showed some 14 characters, then beside
    Rename some 24 ("Chrome on Linux, 6 Dec 202"); now it has a line of its own across the row,
    Rename under it, and shows the whole default name; no date breaks across lines. Two passkeys
    left unnamed on one day get distinct names, the second numbered."""
    user = _signed_in(new_user, live_idp, accounts.new())
    page = user.page
    page.set_viewport_size(DESKTOP)
    _add_passkey(user)
    user.allow_console_error(r"status of 403 .*/account/passkeys/options")  # the step-up's
    add = page.get_by_role("button", name="Add a passkey")
    _stepped_up(page, live_idp, add)
    _plug_in(user, SECURITY_KEY)
    add.click()
    expect(page.locator("#passkey-list .passkey-item")).to_have_count(2)
    names = page.locator("#passkey-list .passkey-name").all_inner_texts()
    assert re.fullmatch(r"Chrome on Linux, \d{1,2} [A-Z][a-z]{2} \d{4}", names[0]), names
    assert names[1] == f"{names[0]} (2)", names

    # The second row's name is the longer one, numbered.
    row = page.locator("#passkey-list .passkey-item").nth(1)
    field = row.get_by_role("textbox")
    remove = row.get_by_role("button", name=re.compile("^Remove"))
    rename = row.get_by_role("button", name="Rename")
    for size in (PHONE, DESKTOP):
        page.set_viewport_size(size)
        fits_viewport(page)
        row_box, field_box = row.bounding_box(), field.bounding_box()
        remove_box, rename_box = remove.bounding_box(), rename.bounding_box()
        assert row_box
        assert field_box
        assert remove_box
        assert rename_box
        if size is PHONE:
            # Under Remove, across the whole row, and Rename under the field.
            below = remove_box["y"] + remove_box["height"] <= field_box["y"] + 1
            assert below, (remove_box, field_box)
            assert field_box["width"] >= row_box["width"] - 1, (field_box, row_box)
            assert rename_box["y"] >= field_box["y"] + field_box["height"], (rename_box, field_box)
        else:
            assert remove_box["x"] >= field_box["x"] + field_box["width"], (remove_box, field_box)
            assert rename_box["x"] >= field_box["x"] + field_box["width"], (rename_box, field_box)
        # The whole default name shows in the field, none of it scrolled out of sight.
        shown = field.evaluate("(e) => [e.scrollWidth, e.clientWidth]")
        assert shown[0] <= shown[1], (size, names[1], shown)
        # Every date stays on one line: at 390 px "created 2026-12-05" broke after "2026-".
        # (Two created, one last used: the second passkey is unused.)
        times = page.locator("#passkey-list time")
        assert times.count() == 3, page.locator("#passkey-list").inner_html()
        lines = times.evaluate_all("all => all.map(t => t.getClientRects().length)")
        assert lines == [1, 1, 1], (size, lines)
    _at_both_sizes(user, "passkey-rows")


def test_add_a_passkey_comes_back_ready_with_its_name_after_the_step_up(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """ "Add a passkey" needing a fresh sign-in sent the user to sign in, then back to the top of
    the account page: no word of the passkey, the name they typed gone. Now the page comes back
    at the button with the name, and a line saying to press it again."""
    user = _signed_in(new_user, live_idp, accounts.new(), device=PHONE_DEVICE)
    page = user.page
    _add_passkey(user, name="Phone")
    user.allow_console_error(r"status of 403 .*/account/passkeys/options")  # the step-up's
    page.fill("#passkey-name", "Work laptop")
    add = page.get_by_role("button", name="Add a passkey")
    _stepped_up(page, live_idp, add)
    resume = page.locator("#passkey-resume")
    expect(resume).to_have_text("You're signed in again. Press “Add a passkey” to continue.")
    expect(page.locator("#passkey-name")).to_have_value("Work laptop")
    expect(add).to_be_focused()
    for shown in (resume, add):
        expect(shown).to_be_in_viewport()
    user.screenshot("phone-screen", full_page=False)
    _at_both_sizes(user, "back-after-step-up")

    _plug_in(user, SECURITY_KEY)
    add.click()
    names = page.locator("#passkey-list .passkey-name")
    expect(names).to_have_text(["Phone", "Work laptop"])
    expect(page).to_have_url(f"{live_idp.url}/account")
    expect(resume).to_have_count(0)  # the reload after adding it says nothing of it again


def test_on_a_phone_a_refused_password_is_said_under_its_field(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The password form is at the bottom of the account page: its error showed at the top, a
    screen or two away on a phone. Now the page comes back at the password's section with the
    error under the field, both on screen."""
    user = _signed_in(new_user, live_idp, accounts.new(), device=PHONE_DEVICE)
    page = user.page
    _add_passkey(user, name="A passkey with a name long enough to wrap")  # a longer page
    # Changing the password next to a passkey asks for a passkey sign-in first (the step-up).
    change = page.get_by_role("button", name="Change password")
    page.get_by_label("New password").fill("password123")
    _stepped_up(page, live_idp, change)
    page.get_by_label("New password").fill("password123")
    change.click()
    error = page.locator("#new-password-error")
    expect(error).to_contain_text("one of the most common ones")
    expect(page).to_have_url(f"{live_idp.url}/account#password-heading")
    expect(page.locator(".flashes")).to_have_count(0)
    for shown in (error, page.get_by_label("New password")):
        expect(shown).to_be_in_viewport()
    expect(page.get_by_label("New password")).to_have_attribute(
        "aria-describedby", "new-password-error"
    )
    user.screenshot("phone-screen", full_page=False)
    _at_both_sizes(user, "weak-password")
    page.set_viewport_size(DESKTOP)
    page.goto(f"{live_idp.url}/account")
    expect(error).to_have_count(0)  # said once


def test_on_a_phone_an_address_in_a_sentence_is_never_split_at_its_hyphen(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """On a 390 px phone the account page said "Signed in as marie-" and put the rest of the
    address on the next line (the line broke at its hyphen, where a reader takes it for a word
    split in two). An address in a sentence (style.css, .address: this page's, the consent and
    device pages', the sign-up pages') that fits on a line now starts one of its own, whole."""
    email = f"marie-claire-{secrets.token_hex(3)}@example.org"
    live_idp.create_user(email, PASSWORD, name="Marie", in_process=False)
    user = _signed_in(new_user, live_idp, email, device=PHONE_DEVICE)
    address = user.page.locator("main strong.address")
    expect(address).to_have_text(email)
    assert address.evaluate("(e) => getComputedStyle(e).hyphens") == "manual"
    assert address.evaluate(TEXT_LINES) == 1
    user.screenshot("address-phone", full_page=False)
    fits_viewport(user.page)


#: The characters that start a line of a .phrase's address, and "" for the punctuation after it
#: when it starts one.
LINE_STARTS = """(phrase) => {
  const address = phrase.querySelector('.address');
  const text = address.firstChild;
  const top = (range) => Math.round(range.getBoundingClientRect().top);
  const starts = [];
  let line = null;
  for (let i = 0; i < text.length; i++) {
    const character = document.createRange();
    character.setStart(text, i);
    character.setEnd(text, i + 1);
    if (line !== null && top(character) !== line) starts.push(text.data[i]);
    line = top(character);
  }
  const tail = document.createRange();
  tail.selectNodeContents(phrase);
  tail.setStartAfter(address);
  if (top(tail) !== line) starts.push("");
  return starts;
}"""


def test_the_period_after_an_address_longer_than_a_line_stays_on_its_last_line(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """A phone showed "Signed in as" and an address longer than the line, then its period alone
    on the next line (the address was a box of the line's width). The address and the period
    are one phrase now (style.css, _address.html): at any width from a small phone's to a small
    tablet's, no line starts with the period, nor with one of the address's dots (".com")."""
    email = f"margaret.hamilton.apollo.guidance-{secrets.token_hex(3)}@engineering.example.com"
    live_idp.create_user(email, PASSWORD, name="Margaret", in_process=False)
    user = _signed_in(new_user, live_idp, email, device=PHONE_DEVICE)
    page = user.page
    page.goto(f"{live_idp.url}/logout")  # RP-Initiated Logout 2: the page asks, naming who
    phrase = page.locator("main .phrase", has=page.locator(".address"))
    expect(phrase).to_have_text(f"{email}.")
    expect(phrase.locator(".address")).to_have_text(email)
    assert phrase.locator(".address").evaluate(TEXT_LINES) > 1  # longer than a phone's line
    user.screenshot("long-address-phone", full_page=False)
    wrong: dict[int, list[str]] = {}
    for width in range(300, 481):
        page.set_viewport_size({"width": width, "height": 800})
        starts = phrase.evaluate(LINE_STARTS)
        if "" in starts or "." in starts:
            wrong[width] = starts
    assert wrong == {}, f"lines starting with the period ('') or a dot, by width: {wrong}"
    fits_viewport(page)


def test_on_a_phone_a_moment_stays_with_what_happened_at_it(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """On a 390 px phone the sessions page said "· signed in" and put its date on the next line,
    the account page "· created" and its day, the activity "Chrome" and "156 on Linux". Each such
    phrase (style.css, .phrase) that fits on a line starts one of its own, whole."""
    user = _signed_in(new_user, live_idp, accounts.new(), device=PHONE_DEVICE)
    _add_passkey(user, name="Phone")
    page = user.page
    for path, facts in (
        ("/account", "#passkey-list"),
        ("/account/sessions", "#session-list"),
        ("/account/activity", "#activity-list"),
    ):
        page.goto(f"{live_idp.url}{path}")
        phrases = page.locator(f"{facts} .phrase")
        expect(phrases.first).to_be_visible()
        lines = phrases.evaluate_all(f"(all) => all.map({TEXT_LINES})")
        assert lines == [1] * len(lines), list(zip(phrases.all_inner_texts(), lines, strict=True))
        user.screenshot(f"phrases{path.replace('/', '-')}-phone", full_page=False)
        fits_viewport(page)
    # The browser the activity names, whole on its line ("Chrome 156 on Linux").
    expect(page.locator("#activity-list .phrase").first).to_contain_text("Chrome")


def test_the_last_way_in_cannot_be_removed(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    user = _signed_in(new_user, live_idp, accounts.new())
    page = user.page
    _add_passkey(user, name="Only passkey")

    # Going passkey-only is a removal: it needs a passkey sign-in first, which comes back to
    # the removal's question, not to the top of the account page with nothing said.
    remove_password = page.get_by_role(
        "button", name="Remove password (sign in with passkeys only)"
    )
    with page.expect_navigation(url=re.compile(r"/login\?next=")):
        remove_password.click()
    page.wait_for_url(f"{live_idp.url}/account/password/remove")
    expect(page.get_by_role("heading", name="Remove your password?")).to_be_visible()
    page.get_by_role("button", name="Remove password", exact=True).click()  # the confirmation
    expect(_flash(page)).to_have_text("Password removed: you sign in with passkeys now.")
    expect(remove_password).to_have_count(0)
    expect(page.get_by_label("Set a password")).to_be_visible()
    # The rule is said before a password is refused for it (as on the sign-up page).
    expect(page.locator("label[for=new-password]")).to_have_text(
        "Set a password (at least 8 characters)"
    )

    page.get_by_role("button", name="Remove Only passkey").click()
    page.get_by_role("button", name="Remove passkey").click()  # the confirmation page
    # Said under the passkey, not at the top of the page a screen away on a phone.
    refusal = page.locator("#passkey-list .passkey-item .field-error")
    expect(refusal).to_have_text(
        "This is your only way to sign in, so it can't be removed. "
        "Add another passkey or a password first."
    )
    expect(page.locator(".flashes p.error")).to_have_count(0)
    expect(page.get_by_role("button", name="Remove Only passkey")).to_have_attribute(
        "aria-invalid", "true"
    )
    only = page.locator("#passkey-list .passkey-item").get_attribute("data-credential-id")
    assert page.url.endswith(f"#passkey-{only}"), page.url
    page.set_viewport_size(PHONE)
    user.screenshot("refusal-phone-screen", full_page=False)
    page.set_viewport_size(DESKTOP)
    expect(page.locator("#passkey-list .passkey-item .passkey-name")).to_have_text(["Only passkey"])
    assert len(user.credentials()) == 1

    # Both changes are in the security activity.
    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#activity-list")).to_contain_text("You removed your password")


# -- sessions -------------------------------------------------------------------------------------
def test_a_session_signed_out_from_another_browser_is_dead(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    email = accounts.new()
    here = _signed_in(new_user, live_idp, email)
    there = _signed_in(new_user, live_idp, email)

    here.page.goto(f"{live_idp.url}/account/sessions")
    rows = here.page.locator("#session-list .row")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="This session")).to_have_count(1)
    here.document("sessions", DOCS_IMAGES)

    rows.filter(has_not_text="This session").get_by_role(
        "button", name="Sign out", exact=True
    ).click()
    expect(here.page.get_by_role("heading", name="Sign out that session?")).to_be_visible()
    here.page.get_by_role("button", name="Sign out", exact=True).click()
    expect(_flash(here.page)).to_have_text("That session is signed out.")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("This session")

    there.page.goto(f"{live_idp.url}/account")
    expect(there.page).to_have_url(f"{live_idp.url}/login?next=/account")
    expect(there.page.get_by_role("heading", name="Sign in")).to_be_visible()
    # The remaining session is alive.
    here.page.goto(f"{live_idp.url}/account")
    expect(here.page.get_by_role("heading", name="Your account")).to_be_visible()


# -- connected apps, activity, profile ------------------------------------------------------------
@pytest.fixture(scope="module")
def third_party(live_idp: LiveIdp, relying_party: RelyingParty) -> RelyingParty:
    """A client without --first-party: the user is asked for consent, which is recorded."""
    client = live_idp.create_client(name="Photo Album", redirect_uris=[relying_party.redirect_uri])
    return RelyingParty(
        idp=live_idp,
        base=relying_party.base,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        callbacks=relying_party.callbacks,
    )


def test_connected_apps_activity_and_profile(
    live_idp: LiveIdp, accounts: Accounts, third_party: RelyingParty, new_user: NewUser
) -> None:
    email = accounts.new()
    user = new_user()
    user.like_desktop_chrome()
    page = user.page
    authorization = third_party.authorization()
    page.goto(authorization.url)
    _sign_in_with_password(page, email)
    expect(
        page.get_by_role("heading", name="Allow Photo Album to use your account?")
    ).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{third_party.redirect_uri}?*")
    assert third_party.redeem(authorization)["email"] == email

    page.goto(f"{live_idp.url}/account/apps")
    app = page.locator("#app-list .row")
    expect(app).to_have_count(1)
    expect(app).to_contain_text("Photo Album")
    expect(app).to_contain_text("last used")
    user.document("connected-apps", DOCS_IMAGES)

    page.get_by_role("link", name="Activity").click()
    events = page.locator("#activity-list .row")
    expect(events.first).to_contain_text("You signed in to Photo Album with your password")
    expect(page.locator("#activity-list")).to_contain_text(
        "You allowed Photo Album to use your account"
    )
    expect(page.locator("#activity-list")).to_contain_text("You signed in with your password")
    user.document("activity", DOCS_IMAGES)

    page.get_by_role("link", name="Profile").click()
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_role("button", name="Save name").click()
    expect(_flash(page)).to_have_text("Name saved.")
    expect(page.get_by_label("Name")).to_have_value("Ada Lovelace")
    user.document("profile", DOCS_IMAGES)

    # Disconnecting the app removes it from the list (its tokens are revoked: tests/functional).
    page.get_by_role("link", name="Connected apps").click()
    page.get_by_role("button", name="Disconnect Photo Album").click()
    page.get_by_role("button", name="Disconnect", exact=True).click()  # the confirmation page
    expect(_flash(page)).to_have_text("The app is disconnected.")
    expect(page.get_by_text("No apps.")).to_be_visible()


def test_add_a_passkey_is_disabled_until_its_script_has_wired_it(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """The account page's "Add a passkey" is served disabled and enabled by static/account.js
    once its click does something: clicked earlier, it did nothing and said nothing. The script
    is held in flight by a route the test answers when it chooses."""
    email = accounts.new()
    user = new_user()
    page = user.page
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")
    held: list[Route] = []
    page.route("**/static/account.js*", lambda route: held.append(route))
    page.goto(f"{live_idp.url}/account", wait_until="commit")
    deadline = time.monotonic() + 30
    while not held:  # Playwright delivers the route while the test waits inside it
        assert time.monotonic() < deadline, "the page never asked for account.js"
        page.wait_for_timeout(20)
    add = page.locator("#add-passkey")
    expect(add).to_be_disabled()
    held[0].continue_()
    expect(add).to_be_enabled()
    page.unroute("**/static/account.js*")


def test_portal_pages_have_no_console_errors(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    """Each page through its tab, with a passkey so that the Signal API calls have something to
    say. The fixture fails the test on any console error or CSP violation; checked here too."""
    user = _signed_in(new_user, live_idp, accounts.new())
    _add_passkey(user, name="Laptop")
    tabs = user.page.get_by_role("navigation", name="Account")
    for path, heading, tab in PORTAL_PAGES[1:] + PORTAL_PAGES[:1]:
        tabs.get_by_role("link", name=tab).click()
        expect(user.page).to_have_url(f"{live_idp.url}{path}")
        expect(user.page.get_by_role("heading", level=1)).to_have_text(heading)
        expect(tabs.get_by_role("link", name=tab)).to_have_attribute("aria-current", "page")

    # Signal API: after a name change the profile page tells the credential manager, which shows
    # the new name next to the passkey.
    tabs.get_by_role("link", name="Profile").click()
    user.page.get_by_label("Name").fill("Grace Hopper")
    user.page.get_by_role("button", name="Save name").click()
    expect(_flash(user.page)).to_have_text("Name saved.")
    if user.page.evaluate("typeof PublicKeyCredential.signalCurrentUserDetails === 'function'"):
        _wait_until(
            lambda: user.credentials()[0].get("userDisplayName") == "Grace Hopper",
            f"the credential manager kept the old name: {user.credentials()}",
        )
    assert user.unexpected_problems() == []
