"""The admin console in a real browser, from an empty install to a client app whose users sign in
with passkeys (the browser test; docs/admins.md walks the same road).

1. ``idp init --admin-email`` on an empty install prints a one-time link; the first admin opens
   it, confirms, registers a passkey, and signs in with it to open the console (the guard wants a
   passkey sign-in within ten minutes, which the link's session is not).
2. The admin registers a client app in the console; its secret is shown once; the test is that
   app (authorization code + PKCE S256, then a real ``/token`` request with that secret).
3. The admin invites a user; in another browser profile the user sets a name, registers a passkey,
   and signs in to the app with it.
4. The user loses that passkey; the admin sends a one-time login link. Opening it (twice more)
   spends nothing; confirming signs in to a session whose only page is adding a passkey; the
   link never works again.
5. The audit log shows all of it, and its CSV export downloads with those rows.

The guide's screenshots come from here: ``UPDATE_DOCS_IMAGES=1`` also writes them to
docs/admins/images/ (off by default, so that a test run leaves the working tree clean)."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    BrowserUser,
    RelyingParty,
    add_first_passkey,
    callback_server,
    fits_viewport,
)
from tests.browser.test_passkey_sign_in import _assert_passkey_sign_in
from tests.support.live import LiveIdp

pytestmark = [pytest.mark.browser, pytest.mark.minutes(2)]

NewUser = Callable[..., BrowserUser]
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "admins" / "images"
ADMIN_EMAIL = "admin@example.com"
USER_EMAIL = "grace@example.com"
LINK_FAILED = "This sign-in link does not work"


# -- helpers --------------------------------------------------------------------------------------
def _sign_out(page: Page, idp: LiveIdp) -> None:
    page.goto(f"{idp.url}/account")
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()


def _sign_in_to_app(user: BrowserUser, app: RelyingParty, *, consent: bool) -> dict[str, Any]:
    """The app sends the browser to /authorize; the user signs in with the passkey button (and
    allows the app the first time); the app redeems the code at /token. The ID token's claims."""
    page = user.page
    authorization = app.authorization()
    page.goto(authorization.url)
    # Without a session /authorize shows the sign-in page itself (docs/architecture.md).
    if page.locator("#login-form").count():
        page.get_by_role("button", name="Sign in with a passkey").click()
    if consent:
        expect(
            page.get_by_role("heading", name="Allow Team wiki to use your account?")
        ).to_be_visible()
        page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{app.redirect_uri}?*")
    return app.redeem(authorization)


def _issued_link(page: Page) -> str:
    """The link the console shows the admin once, after issuing an invite or a login link."""
    link = page.locator("#issued-link").inner_text().strip()
    assert re.fullmatch(r"http://localhost:\d+/(invite|login/link)/[A-Za-z0-9_-]{20,}", link), link
    _copies(page, "issued-link")
    return link


def _copies(page: Page, shown_id: str) -> None:
    """The Copy button beside a value shown once (idp/static/copy.js) puts exactly that value on
    the clipboard."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    button = page.locator(f"button[data-copy='{shown_id}']")
    button.click()
    expect(button).to_have_text("Copied")
    shown = page.locator(f"#{shown_id}").inner_text().strip()
    assert page.evaluate("navigator.clipboard.readText()") == shown


def _first_admin_link(idp: LiveIdp) -> str:
    """Step 1's start: the empty install gets its first admin from ``idp init``."""
    assert idp.cli("users", "list", "--json") == []
    # The production server's start created no one and printed no link, only where to get one.
    assert "run `idp init`" in idp.log_path.read_text()
    printed = idp.run("init", "--admin-email", ADMIN_EMAIL).stdout
    assert f"Created {ADMIN_EMAIL}" in printed, printed
    [link] = re.findall(r"http://localhost:\d+/login/link/\S+", printed)
    return link


# -- the walk -------------------------------------------------------------------------------------
def test_from_an_empty_install_to_an_app_whose_users_sign_in_with_passkeys(
    empty_idp: LiveIdp, new_user: NewUser
) -> None:
    idp = empty_idp
    # The passkey button, not autofill, signs in: each step is then a visible click.
    # A desktop: the guide's images show the console as most admins see it.
    admin = new_user(conditional_mediation=False, device=DESKTOP)
    admin.like_desktop_chrome()
    page = admin.page

    # 1. The first admin: the printed link, confirmed, then a passkey.
    page.goto(_first_admin_link(idp))
    expect(page.get_by_role("heading", name=f"Sign in as {ADMIN_EMAIL}?")).to_be_visible()
    admin.document("first-admin-link", DOCS_IMAGES)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    add_first_passkey(page, idp)
    # The link's session proved the mailbox, not a passkey: the console asks for a passkey
    # sign-in first, and opens after it.
    page.goto(f"{idp.url}/admin")
    expect(page).to_have_url(f"{idp.url}/login?next=/admin")
    expect(page.locator(".flashes p")).to_have_text(
        "The admin console needs a passkey sign-in within the last 10 minutes."
    )
    admin.document("console-needs-passkey", DOCS_IMAGES)
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page).to_have_url(f"{idp.url}/admin")
    expect(page.get_by_role("heading", name="Admin console")).to_be_visible()
    admin.document("console", DOCS_IMAGES)
    # An admin has a passkey now: no start prints a link any more.
    assert "/login/link/" not in idp.run("init").stdout

    # 2. A client app, registered in the console.
    with callback_server() as (app_base, callbacks):
        page.get_by_role("link", name="Client apps").click()
        expect(page.locator("#no-clients")).to_be_visible()
        page.get_by_role("link", name="Register a client app").click()
        page.fill("#name", "Team wiki")
        page.get_by_label("Web app (confidential, has a backend)").check()
        # Redirect URIs: https, or http on a loopback host only.
        page.fill("#redirect_uris", "http://wiki.example.com/callback")
        page.fill("#tos_uri", "https://wiki.example.com/terms")
        page.fill("#policy_uri", "https://wiki.example.com/privacy")
        admin.allow_console_error(r"status of 400 .*/admin/clients/new")  # that refusal
        page.get_by_role("button", name="Register", exact=True).click()
        expect(page.locator("#form-error")).to_contain_text("https")
        page.fill("#redirect_uris", app_base + "/callback")
        admin.document("client-form", DOCS_IMAGES)
        page.get_by_role("button", name="Register", exact=True).click()
        expect(page.get_by_role("heading", name="Team wiki is registered")).to_be_visible()
        client_id = page.locator("#client-id").inner_text().strip()
        client_secret = page.locator("#client-secret").inner_text().strip()
        assert client_id
        assert len(client_secret) >= 32
        admin.document("client-secret", DOCS_IMAGES)
        _copies(page, "client-id")
        _copies(page, "client-secret")
        page.get_by_role("link", name="I have stored it: show the app").click()
        expect(page.get_by_role("heading", name="How to connect")).to_be_visible()
        expect(page.locator("#discovery-url")).to_have_text(
            f"{idp.url}/.well-known/openid-configuration"
        )
        expect(page.locator("#snippet-openid-client")).to_contain_text(client_id)
        # Shown once: the app's page never shows the secret again.
        expect(page.locator("main")).not_to_contain_text(client_secret)
        admin.document("client", DOCS_IMAGES)

        app = RelyingParty(idp, app_base, client_id, client_secret, callbacks)
        # The admin is the app's first user (no consent page image: the user's comes below).
        claims = _sign_in_to_app(admin, app, consent=True)
        assert claims["email"] == ADMIN_EMAIL
        _assert_passkey_sign_in(claims)

        # 3. An invited user, in a browser profile of their own.
        page.goto(f"{idp.url}/admin/users")
        page.get_by_role("link", name="Invite or create a user").click()
        page.fill("#email", USER_EMAIL)
        admin.document("invite-form", DOCS_IMAGES)
        page.get_by_role("button", name="Send invite").click()
        expect(page.get_by_role("heading", name="Invite created")).to_be_visible()
        invite = _issued_link(page)
        assert "/invite/" in invite

        # Until they set up, their page offers a new invite first, and says why: the login
        # link is no longer "for someone who lost every way in" (they never had one).
        page.goto(f"{idp.url}/admin/users")
        page.get_by_role("link", name=USER_EMAIL).click()
        expect(page.locator("#link-purpose")).to_have_text(
            re.compile(r"^A login link lets them in once, without the invite's step")
        )
        for label, device in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(device["viewport"])
            fits_viewport(page)
            admin.screenshot(f"invited-user-{label}")

        user = new_user(conditional_mediation=False)
        user.like_desktop_chrome()
        user_page = user.page
        user_page.goto(invite)
        expect(user_page.get_by_role("heading", name="Create your account")).to_be_visible()
        user_page.fill("#name", "Grace Hopper")
        user.document("invite-accept", DOCS_IMAGES)
        user_page.get_by_role("button", name="Continue").click()
        expect(user_page).to_have_url(f"{idp.url}/signup/passkey")
        expect(user_page.get_by_text("Welcome, Grace Hopper.")).to_be_visible()
        add_first_passkey(user_page, idp)
        assert len(user.credentials()) == 1

        # The user signs in to the app with that passkey.
        _sign_out(user_page, idp)
        sub = idp.cli("users", "show", USER_EMAIL, "--json")["sub"]
        claims = _sign_in_to_app(user, app, consent=True)
        assert claims["sub"] == sub
        assert claims["email"] == USER_EMAIL
        # The admin was shown the invite's URL: nothing proves the mailbox yet (OIDC Core 5.1).
        assert claims["email_verified"] is False
        assert claims["name"] == "Grace Hopper"
        _assert_passkey_sign_in(claims)

        # 4. The user lost every passkey: the admin sends a one-time login link.
        _sign_out(user_page, idp)
        user.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": user.authenticator_id})
        page.goto(f"{idp.url}/admin/users")
        expect(page.locator("#user-list .row")).to_have_count(2)
        admin.document("users", DOCS_IMAGES)
        page.get_by_role("link", name=USER_EMAIL).click()
        expect(page.get_by_role("heading", name=USER_EMAIL)).to_be_visible()
        expect(page.locator("#passkey-list .row")).to_have_count(1)
        expect(page.locator("#consent-list .row")).to_have_count(1)
        admin.document("user", DOCS_IMAGES)
        page.get_by_role("button", name="Send login link").click()
        expect(page.get_by_role("heading", name="Login link created")).to_be_visible()
        rescue = _issued_link(page)
        assert "/login/link/" in rescue
        admin.document("login-link-issued", DOCS_IMAGES)

        # Opening the link, and reloading it twice, spends nothing.
        user_page.goto(rescue)
        for _ in range(2):
            user_page.reload()
        expect(user_page.get_by_role("heading", name=f"Sign in as {USER_EMAIL}?")).to_be_visible()
        expect(user_page.get_by_role("button", name="Sign in", exact=True)).to_be_visible()
        user.document("login-link-confirm", DOCS_IMAGES)
        page.get_by_role("link", name=f"Back to {USER_EMAIL}").click()
        expect(page.locator("#live-links .row")).to_have_count(1)
        expect(page.locator("#live-links .row")).to_contain_text("Login link")
        [live] = idp.cli("login-link", "list", USER_EMAIL, "--json")
        assert live["purpose"] == "login"

        # Confirming signs in to a session whose only way forward is a new passkey.
        user_page.get_by_role("button", name="Sign in", exact=True).click()
        expect(user_page).to_have_url(f"{idp.url}/account/recover")
        user.document("recovery", DOCS_IMAGES)
        for elsewhere in ("/account", "/account/sessions", "/account/apps", "/account/profile"):
            user_page.goto(idp.url + elsewhere)
            expect(user_page).to_have_url(f"{idp.url}/account/recover")
        # Nor does the app get a code from that session: /authorize asks for a real sign-in.
        blocked = app.authorization()
        user_page.goto(blocked.url)
        expect(user_page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
        assert app.callbacks_for(blocked.state) == []
        user_page.goto(f"{idp.url}/account/recover")
        user_page.get_by_role("button", name="Add a passkey").click()
        # The account kept its backup codes: none are shown, the account page is next.
        expect(user_page).to_have_url(f"{idp.url}/account")
        assert len(user.credentials()) == 1
        page.reload()
        expect(page.locator("#live-links")).to_have_count(0)
        expect(page.locator("#passkey-list .row")).to_have_count(2)
        assert idp.cli("login-link", "list", USER_EMAIL, "--json") == []

        # A second use of the link fails, calmly, in any browser.
        user.allow_console_error(r"status of 400")
        user_page.goto(rescue)
        expect(user_page.get_by_role("heading", name=LINK_FAILED)).to_be_visible()
        user.document("login-link-spent", DOCS_IMAGES)
        # The new passkey signs in to the app (consent was given before).
        _sign_out(user_page, idp)
        again = _sign_in_to_app(user, app, consent=False)
        assert again["sub"] == sub
        _assert_passkey_sign_in(again)

    # 5. The audit log: the invite, the link issued and used; the CSV export has those rows.
    page.get_by_role("link", name="Audit log").click()
    page.fill("#filter-user", USER_EMAIL)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/admin/audit\?.*user=grace%40example\.com"))
    events = page.locator("#audit-list tbody tr")
    for kind in ("invite.issued", "invite.accepted", "login_link.issued", "login.link"):
        expect(
            events.filter(has=page.locator("code", has_text=re.compile(f"^{kind}$")))
        ).not_to_have_count(0)
    admin.document("audit", DOCS_IMAGES)
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"idp-audit-\d{8}T\d{6}Z\.csv", download.suggested_filename)
    with open(download.path(), newline="", encoding="utf-8") as exported:
        rows = list(csv.DictReader(exported))
    by_kind: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    # Every row is about the filtered user, as actor or subject.
    assert all(USER_EMAIL in (r["actor_email"], r["subject_email"]) for r in rows), rows
    [invited] = by_kind["invite.issued"]
    assert (invited["actor_email"], invited["subject_email"]) == (ADMIN_EMAIL, USER_EMAIL)
    [accepted] = by_kind["invite.accepted"]
    assert accepted["outcome"] == "success"
    [issued] = by_kind["login_link.issued"]
    assert (issued["actor_email"], issued["subject_email"]) == (ADMIN_EMAIL, USER_EMAIL)
    [used] = by_kind["login.link"]
    assert (used["outcome"], used["subject_email"]) == ("success", USER_EMAIL)
    assert used["ip_address"] == "127.0.0.1"
    assert "Chrome" in used["user_agent"]

    # The sign-in policy page: each setting, its value in force (the configured defaults here).
    page.get_by_role("link", name="Policy").click()
    expect(page.get_by_role("heading", name="Sign-in policy")).to_be_visible()
    expect(page.locator("#policy-form fieldset")).not_to_have_count(0)
    expect(page.locator("[data-overridden]")).to_have_count(0)
    admin.document("policy", DOCS_IMAGES)

    # An API token for automation (docs/api.md): shown once, with its Copy.
    page.get_by_role("link", name="API tokens").click()
    page.fill("#token-name", "deploy-bot")
    page.locator("input[name=scopes]").first.check()
    page.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("heading", name="API token deploy-bot is ready")).to_be_visible()
    _copies(page, "api-token")
