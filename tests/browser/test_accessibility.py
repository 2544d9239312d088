"""Every page a user or an admin sees, checked against WCAG 2.2 level A and AA by axe-core
(tests/browser/axe.py), on a 1280x800 desktop, on a 390 px wide phone and at 320 CSS px wide.

One browser profile per screen walks the pages in turn, as people reach them: the sign-in page
(passkey autofill offered) and its password step, recovery, sign-up, the "create a passkey?"
prompt, the password's second step (authenticator app, backup code) and the session a backup code
recovers and the same session past its time, consent, the device flow, an invitation and a login
link, sign-out, the error pages, the page that posts a form as it loads (form_post's answer, with
and without scripts, and a cross-site POST sent again), every portal page (an email change's
confirmation too) and every admin console page (a client's back-channel logout failures too). The
test fails at the end with each page's violations (rule, impact, the elements, what is wrong) and
each page wider than the screen (a horizontal page scroll: WCAG 2.2 1.4.10 Reflow asks for none at
320 CSS px, the third screen's width); each page's screenshot is in test-artifacts/screenshots/."""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
import requests
from flask import Flask
from playwright.sync_api import Page, expect
from sqlalchemy import insert, select, update

from idp.models import BrowserSession, OutboxMessage, User
from idp.models.base import utcnow
from idp.services.portal import STEP_UP_WINDOW
from tests.browser.axe import Violation, axe_violations, describe
from tests.browser.conftest import (
    DESKTOP,
    PASSWORD,
    PHONE,
    TEXT_LINES,
    BrowserUser,
    RelyingParty,
    add_first_passkey,
    callback_server,
    overflow,
    serve_idp,
)
from tests.browser.test_admin import _issued_link
from tests.browser.test_device_flow import DEVICE_GRANT
from tests.browser.test_fallback import STEP
from tests.browser.test_passkey_sign_in import _sign_in_with_password
from tests.support.apps import app_of
from tests.support.factories import change
from tests.support.live import LiveIdp

pytestmark = [pytest.mark.browser, pytest.mark.minutes(3)]

NewUser = Callable[..., BrowserUser]
#: WCAG 2.2 1.4.10 Reflow: no scrolling in two dimensions at 320 CSS px wide, the width of the
#: narrowest phones in use (and of a 1280 px screen zoomed to 400 %).
REFLOW = {**PHONE, "viewport": {"width": 320, "height": 568}}
DEVICES = {"desktop": DESKTOP, "phone": PHONE, "reflow": REFLOW}


@pytest.fixture(scope="module")
def idp() -> Iterator[LiveIdp]:
    """An idp of the module's own: sign-up open and the passkey prompt on, so that their pages
    are reached (the session's ``live_idp`` has neither, and other modules rely on that)."""
    env = {"IDP_SIGNUP_ENABLED": "true", "IDP_PASSKEY_PROMPT": "true"}
    with serve_idp("idp-a11y-", env) as served:
        yield served


@dataclass
class Audit:
    """One screen's walk: each page checked, its violations kept by page."""

    user: BrowserUser
    idp: LiveIdp
    device: str
    found: dict[str, list[Violation]] = field(default_factory=dict)
    #: The pages wider than the screen: by how much, and what reaches past its edge.
    wide: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)

    @property
    def page(self) -> Page:
        return self.user.page

    def check(self, step: str) -> None:
        """The page as it is now: its screenshot, its width, then axe."""
        self.page.wait_for_load_state("load")
        self.user.screenshot(step)
        self.checked.append(step)
        wider = overflow(self.page)
        if wider is not None:
            self.wide[step] = wider
        violations = axe_violations(self.page)
        if violations:
            self.found[f"{step} ({self.page.url})"] = violations

    def open(self, path: str, heading: str | re.Pattern[str], step: str) -> None:
        self.page.goto(self.idp.url + path)
        expect(self.page.get_by_role("heading", name=heading).first).to_be_visible()
        self.check(step)


@contextmanager
def _live_database(idp: LiveIdp) -> Iterator[Flask]:
    """An app on the live server's database: a scene the walk cannot wait for (a session five
    minutes old, a receiver failing its logout tokens) is set there."""
    with tempfile.TemporaryDirectory() as instance, app_of(idp, Path(instance)) as flask_app:
        yield flask_app


# -- the walk, in parts ---------------------------------------------------------------------------
def _signed_out_pages(audit: Audit) -> None:
    page = audit.page
    audit.open("/login", "Sign in", "sign-in")
    # The passkey autofill is offered: the page shows the button and the way to the password.
    expect(page.locator("#passkey-button")).to_be_visible()
    audit.check("sign-in-autofill")
    page.get_by_role("button", name="Use your password instead").click()
    expect(page.locator("#password")).to_be_visible()
    audit.check("sign-in-password")
    audit.user.allow_console_error(r"status of 401 .*/login")  # the refused password
    page.fill("#email", "nobody@example.com")
    page.fill("#password", "not the password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.locator("#form-errors .error")).to_be_visible()
    audit.check("sign-in-refused")
    audit.open("/login/recover", "Can't access your account?", "recover")
    audit.open("/logout", re.compile("^(Sign out of idp|You are signed out)"), "sign-out")


def _error_pages(audit: Audit, app: RelyingParty) -> None:
    audit.user.allow_console_error(r"status of (400|404)")
    audit.open("/authorize?client_id=no-such-app&response_type=code", re.compile("."),
               "error-unknown-client")  # fmt: skip
    # A redirect URI the app did not register: idp cannot send the error back, and shows it.
    bad = app.authorization(redirect_uri=app.base + "/elsewhere")
    audit.open(bad.url.removeprefix(audit.idp.url), re.compile("."), "error-bad-request")
    audit.open("/no-such-page", re.compile("."), "error-not-found")
    audit.open(f"/login/link/{secrets.token_urlsafe(32)}", re.compile("."), "error-spent-link")


#: The state of the authorization requests whose self-posting page the walk holds.
HELD_STATE = "self-posting-held"
#: The self-posting page (idp/templates/self_posting_form.html) posts its form as it loads; on a
#: page whose query carries ``HELD_STATE`` the form's submit() does nothing, so the page stays to
#: be checked as a user sees it until the browser leaves.
HOLD_SELF_POSTING = f"""(() => {{
  const submit = HTMLFormElement.prototype.submit;
  HTMLFormElement.prototype.submit = function () {{
    if (new URLSearchParams(location.search).get("state") !== "{HELD_STATE}") submit.call(this);
  }};
}})();"""
#: A relying party's page on another site, whose form posts to idp's authorization endpoint.
CROSS_SITE_FORM = "https://rp.example/sign-in"


def _self_posting_pages(audit: Audit, app: RelyingParty) -> None:
    """The page that posts a form as it loads, caught before it does: form_post's answer (OAuth
    2.0 Form Post Response Mode 2; signed out, ``prompt=none`` answers ``login_required`` there)
    as a browser with scripts shows it and as one without shows it (its button), and a relying
    party's cross-site POST sent again from idp's origin (idp.web.same_site)."""
    page, idp = audit.page, audit.idp
    page.add_init_script(HOLD_SELF_POSTING)
    heading = re.compile("^Returning to the application")
    answer = app.authorization(response_mode="form_post", prompt="none", state=HELD_STATE)
    audit.open(answer.url.removeprefix(idp.url), heading, "form-post")
    # Loaded with scripts off, the page is parsed as a browser without scripts parses it (the
    # <noscript> button shown, nothing posted); they are back on for axe, which runs as a script.
    audit.user.cdp.send("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.goto(answer.url)
    finally:
        audit.user.cdp.send("Emulation.setScriptExecutionDisabled", {"value": False})
    expect(page.get_by_role("button", name="Continue")).to_be_visible()
    audit.check("form-post-without-scripts")

    action = f"{idp.url}/authorize?state={HELD_STATE}"
    form = (f'<!doctype html><html lang="en"><title>Sign in</title><form method="post" '
            f'action="{action}"><input type="hidden" name="client_id" value="{app.client_id}">'
            '<button>Sign in with idp</button></form></html>')  # fmt: skip
    page.route(CROSS_SITE_FORM, lambda route: route.fulfill(body=form, content_type="text/html"))
    page.goto(CROSS_SITE_FORM)
    page.get_by_role("button", name="Sign in with idp").click()
    expect(page.get_by_role("heading", name=re.compile("^Continuing"))).to_be_visible()
    audit.check("cross-site-post-again")
    page.unroute(CROSS_SITE_FORM)


def _sign_up(audit: Audit) -> str:
    """Sign-up with an email, its confirmation link, a first passkey and its backup codes: the
    new user is signed in on /account. Their address."""
    page, idp = audit.page, audit.idp
    email = f"a11y-{audit.device}-{secrets.token_hex(3)}@example.com"
    audit.open("/signup", "Create an account", "signup")
    page.fill("#email", email)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    audit.check("signup-check-email")
    [message] = [m for m in idp.cli("outbox", "--json") if m["recipient"] == email]
    [link] = re.findall(r"http://localhost:\d+/signup/confirm/\S+", message["body"])
    page.goto(link)
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    page.fill("#name", "Ada Lovelace")
    audit.check("signup-confirm")
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{idp.url}/signup/passkey")
    audit.check("signup-passkey")
    add_first_passkey(page, idp, on_codes=lambda: audit.check("signup-backup-codes"))
    return email


def _portal(audit: Audit) -> None:
    audit.open("/account", "Your account", "portal-account")
    audit.open("/account/sessions", "Where you're signed in", "portal-sessions")
    audit.open("/account/activity", "Security activity", "portal-activity")
    audit.open("/account/profile", "Profile", "portal-profile")
    audit.open("/account/totp", "Set up an authenticator app", "portal-totp")
    audit.open("/account", "Your account", "portal-account-again")
    audit.page.locator("#rename-1").fill("My laptop")
    audit.page.get_by_role("button", name="Rename").click()
    expect(audit.page.locator(".flashes p")).to_have_text("Passkey renamed.")
    audit.check("portal-renamed")
    item = audit.page.locator("#passkey-list .passkey-item")
    credential_id = item.get_attribute("data-credential-id")
    audit.open(f"/account/passkeys/{credential_id}/remove", re.compile("."),
               "portal-passkey-remove")  # fmt: skip


def _email_change(audit: Audit) -> str:
    """An email change, asked for (and left pending) in a stepped-up session: the confirmation
    page its link opens, signed in. The link's path."""
    new_email = f"moved-{audit.device}-{secrets.token_hex(3)}@example.com"
    audit.open("/account/profile", "Profile", "portal-profile-again")
    audit.page.fill("#email", new_email)
    audit.page.get_by_role("button", name="Change email").click()
    expect(audit.page.locator("#pending-email-change")).to_be_visible()
    audit.check("portal-email-pending")
    [message] = [m for m in audit.idp.cli("outbox", "--json") if m["recipient"] == new_email]
    [link] = re.findall(r"http://localhost:\d+(/account/email/confirm\?token=\S+)", message["body"])
    audit.open(link, "Confirm your new email address", "email-confirm")
    return str(link)


def _consent_and_apps(audit: Audit, app: RelyingParty) -> None:
    page = audit.page
    authorization = app.authorization()
    page.goto(authorization.url)
    expect(page.get_by_role("heading", name=re.compile("^Allow Notes"))).to_be_visible()
    audit.check("consent")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{app.redirect_uri}?*")
    audit.open("/account/apps", "Connected apps", "portal-apps")
    audit.open(f"/account/apps/{app.client_id}/revoke", re.compile("."), "portal-app-disconnect")
    # An app only a group's members may use: the refusal page.
    group = f"payroll-{audit.device}"
    audit.idp.run("groups", "create", group)
    client = audit.idp.create_client(name="Payroll", redirect_uris=[app.redirect_uri])
    audit.idp.run("clients", "edit", client["client_id"], "--allowed-group", group)
    refused = RelyingParty(app.idp, app.base, client["client_id"], client["client_secret"],
                           app.callbacks).authorization()  # fmt: skip
    audit.user.allow_console_error(r"status of 403 .*/authorize")
    page.goto(refused.url)
    expect(page.locator("#return-to-client")).to_be_visible()
    audit.check("access-refused")


def _device_flow(audit: Audit) -> None:
    page, idp = audit.page, audit.idp
    client = idp.create_client(name="Living Room TV", redirect_uris=[], first_party=True,
                               grant_types=[DEVICE_GRANT])  # fmt: skip
    codes = requests.post(idp.discovery()["device_authorization_endpoint"], timeout=10,
                          auth=(client["client_id"], client["client_secret"]),
                          data={"scope": "openid profile"}).json()  # fmt: skip
    page.goto(codes["verification_uri_complete"])
    expect(page.get_by_role("heading", name="Sign in on a device")).to_be_visible()
    audit.check("device-enter")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#device-client")).to_have_text("Living Room TV")
    audit.check("device-review")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#device-approved")).to_be_visible()
    audit.check("device-approved")


def _console(audit: Audit, email: str) -> None:
    """The signed-up user made an admin: every console page, with a client, a group, an invite
    and an API token in it. The invitation it issues; its link is opened later, signed out."""
    page, idp = audit.page, audit.idp
    idp.run("users", "promote", email)
    page.goto(f"{idp.url}/admin")
    # The console wants a recent passkey sign-in: the login page's autofill gives it at once.
    expect(page.get_by_role("heading", name="Admin console")).to_be_visible()
    audit.check("admin")
    email_link = _email_change(audit)  # the console's sign-in is the step-up it asks for
    audit.open("/admin/users", "Users", "admin-users")
    audit.open("/admin/users/new", "Invite a user", "admin-user-new")
    invited = f"invited-{audit.device}-{secrets.token_hex(3)}@example.com"
    page.fill("#email", invited)
    page.get_by_role("button", name="Send invite").click()
    expect(page.get_by_role("heading", name="Invite created")).to_be_visible()
    audit.check("admin-invite-created")
    invite = _issued_link(page)
    audit.open("/admin/users", "Users", "admin-users-invited")
    page.get_by_role("link", name=email).click()
    expect(page.get_by_role("heading", name=email)).to_be_visible()
    audit.check("admin-user")

    audit.open("/admin/clients", "Client apps", "admin-clients")
    audit.open("/admin/clients/new", re.compile("."), "admin-client-new")
    page.fill("#name", "Team wiki")
    page.get_by_label("Web app (confidential, has a backend)").check()
    page.fill("#redirect_uris", "http://wiki.example.com/callback")
    audit.user.allow_console_error(r"status of 400 .*/admin/clients/new")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.locator("#form-error")).to_contain_text("https")
    audit.check("admin-client-refused")
    page.fill("#redirect_uris", "https://wiki.example.com/callback")
    page.get_by_role("button", name="Register", exact=True).click()
    expect(page.get_by_role("heading", name="Team wiki is registered")).to_be_visible()
    audit.check("admin-client-secret")
    page.get_by_role("link", name="I have stored it: show the app").click()
    expect(page.get_by_role("heading", name="How to connect")).to_be_visible()
    audit.check("admin-client")
    client_path = page.url.removeprefix(idp.url)
    for suffix, heading in (("/edit", "Edit Team wiki"), ("/access", "Who may sign in"),
                            ("/claims", "What Team wiki would receive"),
                            ("/delete", "Delete Team wiki?")):  # fmt: skip
        step = f"admin-client-{suffix[1:]}"
        audit.open(client_path + suffix, re.compile(re.escape(heading)), step)
    # Logout tokens its receiver did not take: the app's page lists them in a table.
    failed = {"channel": "http", "recipient": client_path.rsplit("/", 1)[1], "kind": "logout",
              "subject": "", "body": "", "attempts": 5, "last_failure_at": utcnow(),
              "last_error": "could not reach https://wiki.example.com/backchannel-logout: "
              "connection refused"}  # fmt: skip
    with _live_database(idp) as flask_app:
        change(flask_app, insert(OutboxMessage).values([failed, failed]))
    audit.open(client_path, "Team wiki", "admin-client-logout-failures")
    # The reason is read whole: on a phone each failure is a block as wide as the table, not a
    # column a few letters wide beside three others.
    if audit.device == "phone":
        reason = page.locator("#logout-failures td[data-label=Reason]").first.bounding_box()
        table = page.locator("#logout-failures").bounding_box()
        assert reason
        assert table
        assert reason["width"] > 0.6 * table["width"], (reason, table)
    # Its state is one phrase on one line, on a phone as on a laptop ("Given|up" was two).
    state = page.locator("#logout-failures td[data-label=Now]").first
    expect(state).to_have_text("Given up")
    assert state.evaluate(TEXT_LINES) == 1

    audit.open("/admin/groups", "Groups", "admin-groups")
    page.fill("#group-name", f"staff-{audit.device}")
    page.fill("#group-display-name", "Staff")
    page.locator("#create-group").click()
    expect(page.locator("#group-name")).to_have_text(f"staff-{audit.device}")
    audit.check("admin-group")
    audit.open(page.url.removeprefix(idp.url) + "/delete", re.compile("^Delete the group"),
               "admin-group-delete")  # fmt: skip
    audit.open("/admin/audit", "Audit log", "admin-audit")
    audit.open("/admin/policy", "Sign-in policy", "admin-policy")
    audit.open("/admin/api-tokens", "API tokens", "admin-api-tokens")
    page.fill("#token-name", f"deploy-{audit.device}")
    page.locator("input[name=scopes]").first.check()
    page.locator("#create-token").click()
    expect(page.get_by_role("heading", name=re.compile("^API token"))).to_be_visible()
    audit.check("admin-api-token-created")
    page.get_by_role("link", name=re.compile("^I have stored it")).click()
    audit.check("admin-api-tokens-one")
    page.locator("#token-list a.button").first.click()
    expect(page.get_by_role("heading", name=re.compile("^Revoke"))).to_be_visible()
    audit.check("admin-api-token-revoke")

    # Signed out, the invitation and a login link, as their recipients see them.
    audit.open("/logout", "Sign out of idp?", "sign-out-confirm")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    audit.check("signed-out")
    audit.open(email_link, "Confirm your new email address", "email-confirm-signed-out")
    page.goto(invite)
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    audit.check("invite")
    link = idp.run("login-link", "issue", email).stdout
    [url] = re.findall(r"http://localhost:\d+/login/link/\S+", link)
    page.goto(url)
    expect(page.get_by_role("heading", name=f"Sign in as {email}?")).to_be_visible()
    audit.check("login-link")


def _current_code(secret: str) -> str:
    """A code of the current step that stays valid while the browser sends it: the last seconds
    of a step are waited out."""
    left = STEP - time.time() % STEP
    if left < 5:
        time.sleep(left + 0.1)
    return pyotp.TOTP(secret).now()


def _wrong_code(secret: str) -> str:
    """Six digits that are none of the codes idp accepts now (the step before, this one, the
    next)."""
    near = {pyotp.TOTP(secret).at(time.time() + n * STEP) for n in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def _password_user(audit: Audit) -> None:
    """A user with only a password: the "create a passkey?" prompt, the authenticator app's set-up
    (a wrong code too) and its backup codes, the second step (app, backup code), and the
    session a backup code recovers."""
    page, idp = audit.page, audit.idp
    email = f"pw-{audit.device}-{secrets.token_hex(3)}@example.com"
    idp.create_user(email, PASSWORD, name="Grace Password")
    # The authenticator forgets the first user's passkey: its autofill would sign them in.
    authenticator = {"authenticatorId": audit.user.authenticator_id}
    audit.user.cdp.send("WebAuthn.clearCredentials", authenticator)
    page.goto(f"{idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page).to_have_url(re.compile(r"/login/passkey-prompt"))
    audit.check("passkey-prompt")
    page.get_by_role("button", name="Not now").click()
    expect(page).to_have_url(f"{idp.url}/account")
    audit.open("/account/totp", "Set up an authenticator app", "totp-setup")
    secret = page.locator("#totp-secret").inner_text().strip()
    audit.user.allow_console_error(r"status of (400|401)")
    page.fill("#code", _wrong_code(secret))
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("#totp-error")).to_be_visible()
    audit.check("totp-wrong-code")
    page.fill("#code", _current_code(secret))
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Authenticator app added")).to_be_visible()
    audit.check("totp-backup-codes")
    codes = [c.strip() for c in page.locator("#backup-codes code").all_inner_texts()]
    page.get_by_role("link", name="I saved them").click()

    # The second step: the app's code, or (opened) a backup code.
    page.goto(f"{idp.url}/logout")
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{idp.url}/account")
    _sign_in_with_password(page, email)
    expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    audit.check("second-step")
    page.fill("#totp-code", _wrong_code(secret))
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#form-errors .error")).to_be_visible()
    audit.check("second-step-refused")
    page.get_by_text("Use a backup code").click()
    expect(page.locator("#backup-code")).to_be_visible()
    audit.check("second-step-backup-code")
    page.fill("#backup-code", codes[0])
    page.get_by_role("button", name="Use backup code").click()
    expect(page).to_have_url(re.compile(r"/account|/login/passkey-prompt"))
    # Signed in with two factors just now: the confirmations of the step-up pages themselves
    # (docs/security.md, "Sessions"), not the sign-in page a password alone is sent to.
    audit.open("/account/backup-codes", "Get new backup codes?", "backup-codes")
    audit.open("/account/totp/remove", "Remove the authenticator app?", "totp-remove")

    # Recovery with a backup code: a session whose only page is adding a passkey.
    page.goto(f"{idp.url}/logout")
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{idp.url}/login/recover")
    page.fill("#email", email)
    page.fill("#code", codes[1])
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    audit.check("recovered")
    # Past the step-up window (docs/security.md, "Sessions") it can add nothing: sign in again.
    user_id = select(User.id).where(User.email == email).scalar_subquery()
    then = utcnow() - STEP_UP_WINDOW - timedelta(minutes=1)
    with _live_database(idp) as flask_app:
        change(flask_app, update(BrowserSession).where(BrowserSession.user_id == user_id)
               .values(auth_time=then))  # fmt: skip
    audit.open("/account/recover", "Sign in again", "recovered-expired")


# -- the test -------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_every_page_meets_wcag_2_2_aa(idp: LiveIdp, new_user: NewUser, device: str) -> None:
    user = new_user(device=DEVICES[device])
    user.like_desktop_chrome()
    audit = Audit(user, idp, device)
    _signed_out_pages(audit)
    email = _sign_up(audit)
    _portal(audit)
    with callback_server() as (base, callbacks):
        client = idp.create_client(name="Notes", redirect_uris=[base + "/callback"])
        app = RelyingParty(idp, base, client["client_id"], client["client_secret"], callbacks)
        _consent_and_apps(audit, app)
        _device_flow(audit)
        _console(audit, email)
        _error_pages(audit, app)
        _self_posting_pages(audit, app)
    _password_user(audit)
    assert len(audit.checked) >= 50, audit.checked
    messages = []
    if audit.found:
        broken = f"{len(audit.found)} of {len(audit.checked)} pages"
        messages.append(
            f"WCAG 2.2 AA violations on the {device} ({broken}):\n{describe(audit.found)}"
        )
    if audit.wide:
        wide = "".join(f"\n  {step}: {why}" for step, why in audit.wide.items())
        messages.append(f"Pages wider than the {device}'s screen:{wide}")
    if messages:
        pytest.fail("\n".join(messages), pytrace=False)
