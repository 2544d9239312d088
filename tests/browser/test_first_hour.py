"""The first hour of a new deployment, walked on a phone and checked on a desktop at every page.

From ``idp init`` on an empty database to a relying party that signs its users in with passkeys:
the first admin opens the printed link, registers a passkey, registers a client app in the
console and invites a user; the user opens the invitation, registers a passkey, signs in at the
app and sees the portal. Then every admin and portal page is opened once more.

The walk runs on a phone (390x844, touch, the page's ``<meta name=viewport>`` honoured). At every
page the same page (its DOM as the phone shows it, with the site's CSS and scripts) is also laid
out on a 1280x800 desktop. On both, the test fails on a console error and on a page wider than
its viewport (a horizontal page scroll; docs/admins.md shows the console on a phone). Both
viewports' screenshots land in test-artifacts/screenshots/; ``UPDATE_DOCS_IMAGES=1`` also writes
the guides' phone images (docs/admins/images/phone-*.png, docs/users/images/phone-*.png)."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    BrowserUser,
    RelyingParty,
    add_first_passkey,
    callback_server,
    overflow,
)
from tests.browser.test_admin import (
    ADMIN_EMAIL,
    _first_admin_link,
    _issued_link,
)
from tests.browser.test_passkey_sign_in import _assert_passkey_sign_in
from tests.support.live import LiveIdp

pytestmark = [pytest.mark.browser, pytest.mark.minutes(1)]

NewUser = Callable[..., BrowserUser]
DOCS = Path(__file__).resolve().parents[2] / "docs"
#: A long address with no hyphen to break at: a heading or a row that shows it must wrap it
#: rather than widen a phone's page.
USER_EMAIL = "margaret.hamilton.apollo.guidance@engineering.example.com"


@dataclass
class Person:
    """One person of the walk: the phone they act on, and a desktop that lays out each page."""

    name: str
    phone: BrowserUser
    desktop: BrowserUser
    idp: LiveIdp
    #: Numbers the screenshots of the whole walk, both people's, in order.
    steps: Iterator[int]

    @property
    def page(self) -> Page:
        return self.phone.page

    def check(
        self, step: str, docs_image: Path | None = None, *, shown: Locator | None = None
    ) -> None:
        """This page, on the phone and on the desktop: no console error, nothing wider than the
        viewport. ``docs_image``: with ``UPDATE_DOCS_IMAGES=1`` the phone's screen, scrolled to
        ``shown``, is written there for a guide."""
        step = f"{next(self.steps):02d}-{self.name}-{step}"
        page = self.phone.page
        page.wait_for_load_state("load")
        self._assert_fits(self.phone, step, "phone")
        if docs_image is not None and os.environ.get("UPDATE_DOCS_IMAGES") == "1":
            if shown is not None:
                shown.evaluate("(e) => e.scrollIntoView({ block: 'start' })")
            docs_image.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(docs_image))
        # The desktop lays out the very page the phone shows (a page that exists once, such as
        # a secret shown once, cannot be fetched again): its DOM, served at its URL, with the
        # session's cookies for whatever its scripts ask of the server. It is served without the
        # server's CSP, whose script nonces the DOM no longer shows (CSP 3, nonce hiding); the
        # phone ran the page under the real one, where a violation is a console error.
        url = page.url.split("#", 1)[0]
        html = page.content()
        desktop = self.desktop
        desktop.context.clear_cookies()
        desktop.context.add_cookies(self.phone.context.cookies())

        def serve(route: Route) -> None:
            route.fulfill(status=200, content_type="text/html; charset=utf-8", body=html)

        desktop.page.route(lambda u: u.split("#", 1)[0] == url, serve)
        try:
            desktop.page.goto(url)
            desktop.page.wait_for_load_state("load")
        finally:
            desktop.page.unroute_all()
        self._assert_fits(desktop, step, "desktop")

    def _assert_fits(self, user: BrowserUser, step: str, device: str) -> None:
        name = f"{step}-{device}"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        user.page.screenshot(path=str(SCREENSHOTS / f"first_hour-{name}.png"), full_page=True)
        problems = user.unexpected_problems()
        assert not problems, f"{name}: the browser reported errors:\n" + "\n".join(problems)
        wider = overflow(user.page)
        assert wider is None, f"{name}: {wider}"


#: The chosen options of the page's lists wider than their list's box: a phone shows them cut
#: off (the list's arrow takes about 20 px of its inner width).
CLIPPED_SELECTS = """() => [...document.querySelectorAll("select")].filter((s) => {
  const style = getComputedStyle(s);
  const context = document.createElement("canvas").getContext("2d");
  context.font = style.font;
  const room = s.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
  return context.measureText(s.selectedOptions[0].text).width > room;
}).map((s) => s.selectedOptions[0].text)"""
#: The texts of elements laid out on more than one line: a short label or name broken up.
BROKEN = """(elements) => elements
  .filter((e) => {
    const style = getComputedStyle(e);
    const line = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
    const padding = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom)
      + parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
    return e.getClientRects().length > 1 || e.getBoundingClientRect().height - padding > line * 1.5;
  })
  .map((e) => e.innerText)"""


def _assert_whole(elements: Locator, what: str) -> None:
    """Each of ``elements`` (a short name or a button's label, on the phone unless ``what`` says
    otherwise) is on one line: not squeezed into a column beside its neighbours (gr|ou|ps,
    Send|invite)."""
    assert elements.count() > 0, what
    broken = elements.evaluate_all(BROKEN)
    assert not broken, f"{what} broken over lines: {broken}"


def _assert_tall(element: Locator, height: float, what: str) -> None:
    """On the phone, ``element`` is at least ``height`` px high: a target to tap (WCAG 2.2
    2.5.8 asks 24 px of any target; a page's main action gets 44)."""
    box = element.bounding_box()
    assert box is not None, f"{what} is not shown"
    assert box["height"] >= height, f"{what} is {box['height']} px high, under {height}"


def _assert_across(elements: Locator, what: str) -> None:
    """On the phone, each of ``elements`` is as wide as its row: nothing beside it (a badge, a
    button) squeezes it into a column."""
    assert elements.count() > 0, what
    narrow = elements.evaluate_all(
        "(all) => all.filter((e) => e.getBoundingClientRect().width"
        " < e.parentElement.getBoundingClientRect().width - 1).map((e) => e.innerText)"
    )
    assert not narrow, f"{what} squeezed beside something on the phone: {narrow}"


def _person(new_user: NewUser, idp: LiveIdp, name: str, steps: Iterator[int]) -> Person:
    # The passkey button, not autofill, signs in: each step is then a visible tap.
    phone = new_user(conditional_mediation=False, device=PHONE)
    desktop = new_user(conditional_mediation=False, device=DESKTOP)
    for user in (phone, desktop):
        user.like_desktop_chrome()
    return Person(name, phone, desktop, idp, steps)


def _open(
    person: Person,
    path: str,
    heading: str | re.Pattern[str],
    step: str,
    docs_image: Path | None = None,
    *,
    shown: str | None = None,
) -> None:
    """Opens an idp page and checks it; ``shown``: the selector of what a guide's image shows."""
    page = person.page
    page.goto(person.idp.url + path)
    expect(page.get_by_role("heading", name=heading).first).to_be_visible()
    person.check(step, docs_image, shown=page.locator(shown) if shown else None)


def test_the_first_hour_on_a_phone_and_a_desktop(empty_idp: LiveIdp, new_user: NewUser) -> None:
    idp = empty_idp
    steps = itertools.count(1)
    admin = _person(new_user, idp, "admin", steps)
    page = admin.page

    # The first admin: the link `idp init` prints on the empty database, then a passkey.
    page.goto(_first_admin_link(idp))
    expect(page.get_by_role("heading", name=f"Sign in as {ADMIN_EMAIL}?")).to_be_visible()
    admin.check("first-admin-link")
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(f"{idp.url}/account/recover")
    admin.check("recover")
    add_first_passkey(page, idp, on_codes=lambda: admin.check("backup-codes"))
    admin.check("account")
    page.goto(f"{idp.url}/admin")
    expect(page).to_have_url(f"{idp.url}/login?next=/admin")
    # Signed in already, the admin confirms who they are: their address is in the field, not
    # an empty one to type again on a phone.
    expect(page.locator("#email")).to_have_value(ADMIN_EMAIL)
    admin.check("console-needs-passkey")
    # The way out for someone locked out is a target a thumb finds (16 px high before).
    recover = page.get_by_role("link", name="Can't access your account?")
    _assert_tall(recover, 44, "Can't access your account?")
    # The message at the top of the card starts where a heading would, at the card's padding.
    gap = page.evaluate(
        "() => document.querySelector('.flashes p').getBoundingClientRect().top"
        " - document.querySelector('main.card').getBoundingClientRect().top"
        " - parseFloat(getComputedStyle(document.querySelector('main.card')).paddingTop)"
    )
    assert abs(gap) < 1, f"the message starts {gap} px below the card's padding"
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("heading", name="Admin console")).to_be_visible()
    admin.check("console")

    with callback_server() as (app_base, callbacks):
        # A client app, registered in the console.
        page.get_by_role("link", name="Client apps").click()
        expect(page.locator("#no-clients")).to_be_visible()
        admin.check("no-clients")
        page.get_by_role("link", name="Register a client app").click()
        page.fill("#name", "Team wiki")
        page.get_by_label("Web app (confidential, has a backend)").check()
        page.fill("#redirect_uris", app_base + "/callback")
        admin.check("client-form")
        # The chosen option of each list is read whole on the phone, not cut at the arrow.
        clipped = page.evaluate(CLIPPED_SELECTS)
        assert not clipped, f"options cut off on the phone: {clipped}"
        _assert_whole(page.locator("label.choice:has(input[name=scopes]) code"), "scope names")
        page.get_by_role("button", name="Register", exact=True).click()
        expect(page.get_by_role("heading", name="Team wiki is registered")).to_be_visible()
        client_id = page.locator("#client-id").inner_text().strip()
        client_secret = page.locator("#client-secret").inner_text().strip()
        admin.check("client-secret")
        page.get_by_role("link", name="I have stored it: show the app").click()
        expect(page.get_by_role("heading", name="How to connect")).to_be_visible()
        expect(page.locator("#snippet-openid-client")).to_contain_text(client_id)
        client_page = page.url
        admin.check(
            "client",
            DOCS / "admins" / "images" / "phone-client.png",
            shown=page.get_by_role("heading", name="How to connect"),
        )
        app = RelyingParty(idp, app_base, client_id, client_secret, callbacks)

        # An invited user.
        page.goto(f"{idp.url}/admin/users")
        admin.check("users")
        # The page's one action is a button like the client apps' "Register a client app", not
        # a line of link text a thumb has to find (19 px high on the phone before).
        _assert_tall(page.locator("#new-user"), 44, "Invite or create a user")
        page.get_by_role("link", name="Invite or create a user").click()
        page.fill("#email", USER_EMAIL)
        admin.check("invite-form")
        _assert_whole(page.locator("#send-invite, #create-only"), "the invite form's buttons")
        page.get_by_role("button", name="Send invite").click()
        expect(page.get_by_role("heading", name="Invite created")).to_be_visible()
        invite = _issued_link(page)
        admin.check("invite-created")

        # The user, on a phone of their own: the invitation, a passkey, the portal.
        user = _person(new_user, idp, "user", steps)
        user_page = user.page
        user_page.goto(invite)
        expect(user_page.get_by_role("heading", name="Create your account")).to_be_visible()
        user_page.fill("#name", "Grace Hopper")
        user.check("invite")
        user_page.get_by_role("button", name="Continue").click()
        expect(user_page).to_have_url(f"{idp.url}/signup/passkey")
        user.check("signup-passkey")
        add_first_passkey(user_page, idp, on_codes=lambda: user.check("backup-codes"))
        user.check("account")

        # Signed out, the user signs in at the app with the passkey, allows it, and is back.
        user_page.get_by_role("button", name="Sign out", exact=True).click()
        expect(user_page.get_by_role("heading", name="You are signed out")).to_be_visible()
        user.check("signed-out")
        authorization = app.authorization()
        user_page.goto(authorization.url)
        expect(user_page.get_by_role("button", name="Sign in with a passkey")).to_be_visible()
        user.check("login")
        user_page.get_by_role("button", name="Sign in with a passkey").click()
        expect(
            user_page.get_by_role("heading", name="Allow Team wiki to use your account?")
        ).to_be_visible()
        user.check("consent")
        user_page.get_by_role("button", name="Allow").click()
        user_page.wait_for_url(f"{app.redirect_uri}?*")
        claims = app.redeem(authorization)
        assert claims["email"] == USER_EMAIL
        assert claims["name"] == "Grace Hopper"
        _assert_passkey_sign_in(claims)

    # The portal: every page of it.
    _open(user, "/account", "Your account", "portal-account")
    _open(user, "/account/sessions", "Where you're signed in", "portal-sessions")
    _open(user, "/account/apps", "Connected apps", "portal-apps")
    # What the app receives (a long address among it) has the row's width, Disconnect under it.
    _assert_across(user_page.locator("#app-list .row > div"), "a connected app")
    expect(user_page.locator("main")).to_contain_text("Team wiki")
    _open(user, "/account/activity", "Security activity", "portal-activity")
    _open(user, "/account/profile", "Profile", "portal-profile")
    _open(user, "/account/totp", "Set up an authenticator app", "portal-totp")
    _open(user, "/account", "Your account", "portal-home",
          DOCS / "users" / "images" / "phone-account.png")  # fmt: skip

    # The console: every page of it, with the app, the user and a group in it.
    _open(admin, "/admin", "Admin console", "console-again")
    _open(admin, "/admin/clients", "Client apps", "clients")
    # Each client id is read on one line, not in pieces of eight characters in a narrow column.
    _assert_whole(page.locator("#client-list code"), "client ids")
    for path, heading, step in (
        ("/access", "Who may sign in to Team wiki", "client-access"),
        ("/claims", "What Team wiki would receive", "client-claims"),
        ("/edit", "Edit Team wiki", "client-edit"),
        ("/delete", "Delete Team wiki?", "client-delete"),
    ):
        _open(admin, client_page.removeprefix(idp.url) + path, heading, step)
    _open(admin, "/admin/users", "Users", "users-again")
    # Each address has the row's width, its badges under it ("admin@localh|ost" beside them).
    _assert_across(page.locator("#user-list .row > div"), "a user's address")
    page.get_by_role("link", name=USER_EMAIL).click()
    expect(page.get_by_role("heading", name=USER_EMAIL)).to_be_visible()
    admin.check("user")
    _open(admin, "/admin/users/new", "Invite a user", "user-new")
    _open(admin, "/admin/groups", "Groups", "groups")
    # A name the field refuses: the browser's bubble says what it takes (the field's title), not
    # only "Please match the requested format".
    page.fill("#group-name", "Engineering!")
    assert page.locator("#group-name").evaluate("(e) => e.validity.patternMismatch")
    expect(page.locator("#group-name")).to_have_attribute("title", re.compile("^Lowercase letters"))
    page.fill("#group-name", "engineering-and-operations")
    page.fill("#group-display-name", "Engineering and operations")
    page.locator("#create-group").click()
    expect(page.locator("#group-name")).to_have_text("engineering-and-operations")
    admin.check("group")
    page.goto(page.url + "/delete")
    expect(page.get_by_role("heading", name=re.compile("^Delete the group"))).to_be_visible()
    admin.check("group-delete")
    _open(admin, "/admin/policy", "Sign-in policy", "policy")
    # API tokens: a long name and three scopes; on both screens each token's Revoke stays inside
    # the card (a table scrolling sideways had hidden it past the phone's edge, and a wide one
    # spilled it out of the desktop's card).
    _open(admin, "/admin/api-tokens", "API tokens", "api-tokens")
    page.fill("#token-name", "terraform-production-deployments")
    for scope in ("clients:write", "users:write", "audit:read"):
        page.get_by_label(scope, exact=True).check()
    page.locator("#create-token").click()
    page.get_by_role("link", name=re.compile("^I have stored it")).click()
    expect(page.locator("#token-list tr[data-token]")).to_have_count(1)
    admin.check("api-tokens-list")
    for user in (admin.phone, admin.desktop):
        inside = user.page.evaluate(
            "() => { const card = document.querySelector('main.card').getBoundingClientRect();"
            " const revoke = document.querySelector('#token-list a.button')"
            "   .getBoundingClientRect();"
            " return revoke.right <= card.right && revoke.right <= window.innerWidth; }"
        )
        assert inside, f"Revoke is past the card's edge on the {user.page.viewport_size}"
    _open(admin, "/admin/audit", "Audit log", "audit",
          DOCS / "admins" / "images" / "phone-audit.png", shown="#audit-list")  # fmt: skip
    # On a laptop, beside a long subject address, each event's browser fits its column whole
    # (style.css, #audit-list); the six columns fit from just past the block layout's 60rem.
    laptop = admin.desktop.page
    _assert_whole(laptop.locator("#audit-list .phrase"), "a browser's name on a laptop")
    laptop.set_viewport_size({"width": 976, "height": 800})
    assert overflow(laptop) is None, overflow(laptop)
    laptop.set_viewport_size(DESKTOP["viewport"])
