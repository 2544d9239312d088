"""Groups in a real browser (docs/admins.md, "Groups, per-app access and claim maps"): an admin
creates a group in the console and restricts a client app to it; a user outside it signs in and
sees idp's refusal page, whose button takes them back to the app with ``access_denied`` (with
``state`` and ``iss``, no code); once the admin adds them to the group, the same sign-in gets a
code and the ID token carries the ``groups`` claim."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    PASSWORD,
    PHONE,
    TEXT_LINES,
    Accounts,
    BrowserUser,
    RelyingParty,
    callback_server,
    fits_viewport,
)
from tests.browser.test_passkey_sign_in import _add_passkey, _sign_in_with_password
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]


def _admin_in_console(
    live_idp: LiveIdp, new_user: NewUser, device: dict[str, Any] | None = None
) -> BrowserUser:
    """An admin with a password adds a passkey; the console's guard then wants a passkey sign-in,
    which the login page's passkey autofill gives at once."""
    email = f"admin-{secrets.token_hex(4)}@example.com"
    live_idp.cli("users", "create", email, "--admin", "--password-stdin", "--json",
                 input=PASSWORD + "\n")  # fmt: skip
    admin = new_user(device=device)
    page = admin.page
    page.goto(f"{live_idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(f"{live_idp.url}/account")
    _add_passkey(admin)
    page.goto(f"{live_idp.url}/admin/groups")
    page.wait_for_url(f"{live_idp.url}/admin/groups")
    return admin


def test_console_restricts_an_app_and_the_refused_user_is_told_and_sent_back(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    admin = _admin_in_console(live_idp, new_user)
    page = admin.page
    group = f"staff-{secrets.token_hex(3)}"
    page.fill("#group-name", group)
    page.fill("#group-display-name", "Browser staff")
    page.get_by_role("button", name="Create group").click()
    page.wait_for_url(f"{live_idp.url}/admin/groups/{group}")
    expect(page.locator("#group-members")).to_have_text("No members.")

    with callback_server() as (base, callbacks):
        client = live_idp.cli(
            "clients", "create", "--name", "Staff wiki", "--redirect-uri", base + "/callback",
            "--first-party", "--scope", "openid", "--scope", "profile", "--scope", "email",
            "--scope", "groups", "--json",
        )  # fmt: skip
        app = RelyingParty(idp=live_idp, base=base, client_id=client["client_id"],
                           client_secret=client["client_secret"], callbacks=callbacks)  # fmt: skip
        page.goto(f"{live_idp.url}/admin/clients/{app.client_id}")
        expect(page.locator("#allowed-groups")).to_have_text("Everyone")
        page.locator("#edit-access").click()
        page.locator("#access-groups").check()
        page.locator(f'input[name="allowed_groups"][value="{group}"]').check()
        page.get_by_role("button", name="Save").click()
        page.wait_for_url(f"{live_idp.url}/admin/clients/{app.client_id}")
        expect(page.locator("#allowed-groups")).to_have_text(group)

        # A user outside the group: idp's page, then back to the app with access_denied.
        email = accounts.new()
        user = new_user()
        # The refusal page is answered with 403 Forbidden, which the browser logs.
        user.allow_console_error(r"status of 403 .*/authorize/continue/")
        refused = app.authorization(scope="openid profile groups")
        user.page.goto(refused.url)
        _sign_in_with_password(user.page, email)
        expect(user.page.locator("#access-refused")).to_contain_text("Staff wiki")
        expect(user.page.get_by_role("alert")).to_contain_text("Browser staff")
        user.page.get_by_role("link", name="Return to Staff wiki").click()
        user.page.wait_for_url(re.compile(re.escape(app.redirect_uri) + r"\?"))
        answer = app.callback(refused.state)
        assert answer["error"] == "access_denied"
        assert answer["iss"] == live_idp.url
        assert "code" not in answer

        # The admin adds the user; the same sign-in now gets a code and the groups claim.
        page.goto(f"{live_idp.url}/admin/groups/{group}")
        page.fill("#member-emails", email)
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.locator(f'#group-members li[data-email="{email}"]')).to_be_visible()
        allowed = app.authorization(scope="openid profile groups")
        user.page.goto(allowed.url)
        user.page.wait_for_url(re.compile(re.escape(app.redirect_uri) + r"\?"))
        claims = app.redeem(allowed)
        assert claims["groups"] == [group]


def test_group_names_stay_whole_on_a_phone_and_a_long_one_wraps_inside_the_card(
    live_idp: LiveIdp, new_user: NewUser
) -> None:
    """On a 390 px phone (style.css, .group-name and #group-list): a group's name that fits on a
    line is never split at its hyphen, in the groups list (no longer a squeezed table column) and
    on the group's page; one longer than the line wraps inside the card, never past its edge."""
    admin = _admin_in_console(live_idp, new_user, device=PHONE)
    page = admin.page
    short = f"payroll-desktop-{secrets.token_hex(2)}"
    long = f"{'engineering-on-call-' * 4}{secrets.token_hex(2)}"[:64]
    for name in (short, long):
        live_idp.cli("groups", "create", name, "--display-name", name.title(), "--json")
    page.goto(f"{live_idp.url}/admin/groups")
    name = page.locator(f'#group-list tr[data-group="{short}"] code')
    expect(name).to_have_text(short)
    assert name.evaluate(TEXT_LINES) == 1
    long_name = page.locator(f'#group-list tr[data-group="{long}"] code')
    assert long_name.evaluate(TEXT_LINES) > 1
    card = page.locator("main.card").bounding_box()
    box = long_name.bounding_box()
    assert card is not None
    assert box is not None
    assert box["x"] + box["width"] <= card["x"] + card["width"]
    fits_viewport(page)
    page.goto(f"{live_idp.url}/admin/groups/{short}")
    expect(page.locator("#group-name")).to_have_text(short)
    assert page.locator("#group-name").evaluate(TEXT_LINES) == 1
    page.goto(f"{live_idp.url}/admin/groups/{long}")
    fits_viewport(page)


#: The right edge of each line of an element's text, and the right edge of the box it wraps in.
LINE_ENDS = """(element) => {
  const range = document.createRange();
  range.selectNodeContents(element);
  const lines = new Map();
  for (const rect of range.getClientRects()) {
    const top = Math.round(rect.top);
    lines.set(top, Math.max(lines.get(top) || 0, rect.right));
  }
  const box = element.closest("li").getBoundingClientRect();
  return {ends: [...lines.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]),
          right: box.right};
}"""


def test_member_addresses_wrap_only_where_needed_and_never_at_a_hyphen_on_a_phone(
    live_idp: LiveIdp, new_user: NewUser, tmp_path: Path
) -> None:
    """On a 390 px phone (style.css, #group-members): a member's address that fits on a line is
    one line, the Remove button under it, never split at its hyphen beside the button; one
    longer than the line fills each line before it wraps (no earlier break at a hyphen) and no
    hyphen is inserted (hyphens: manual). The page's screenshot is left in the test's tmp_path
    for a person to look at."""
    admin = _admin_in_console(live_idp, new_user, device=PHONE)
    page = admin.page
    group = f"crew-{secrets.token_hex(2)}"
    tag = secrets.token_hex(2)
    fits = f"jean-paul-{tag}@example.com"
    long = f"anne-sophie.de-la-fontaine-{tag}.quality-assurance@example-subsidiary.com"
    for email in (fits, long):
        live_idp.cli("users", "create", email, "--json")
    live_idp.cli("groups", "create", group, "--json")
    live_idp.cli("groups", "add", group, fits, long, "--json")
    page.goto(f"{live_idp.url}/admin/groups/{group}")
    short_link = page.locator(f'#group-members li[data-email="{fits}"] a')
    long_link = page.locator(f'#group-members li[data-email="{long}"] a')
    expect(short_link).to_have_text(fits)
    page.screenshot(path=str(tmp_path / "group-members-phone.png"), full_page=True)
    assert short_link.evaluate(TEXT_LINES) == 1
    for link in (short_link, long_link):
        assert link.evaluate("(e) => getComputedStyle(e).hyphens") == "manual"
    lines = long_link.evaluate(LINE_ENDS)
    assert len(lines["ends"]) > 1, lines
    # Every line but the last reaches the row's edge, give or take a character: it broke where
    # the line ran out, not at a hyphen earlier on it.
    for end in lines["ends"][:-1]:
        assert lines["right"] - end < 16, lines
    fits_viewport(page)
