"""A relying party's page that posts to idp, in a real browser: the session cookie is
``SameSite=Lax``, so Chromium withholds it from a POST another site's page makes (RFC 6265bis
5.6.7.1), and idp posts the same form again from its own page (idp/web/same_site.py). The Flask
test client knows nothing of SameSite; only a browser shows that the cookie comes along."""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from playwright.sync_api import Page, Route

from tests.browser.conftest import (
    PASSWORD,
    Accounts,
    BrowserUser,
    RelyingParty,
    callback_server,
)
from tests.support.live import LiveIdp

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]
#: Another site than idp's ``localhost`` (a site is the scheme and the registrable domain; ports
#: do not count): the relying party's page, answered by the test, not by a server.
RP_PAGE = "http://127.0.0.1:9/start"


def _post_from_another_site(page: Page, action: str, fields: dict[str, str]) -> None:
    """Open a page of another site whose form posts ``fields`` to ``action`` as it loads, as a
    relying party sends its user to idp by POST (OIDC Core 3.1.2.1)."""
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in fields.items()
    )
    body = (
        f'<!doctype html><title>RP</title><form method="post" action="{html.escape(action)}">'
        f"{inputs}<button>Go</button></form>"
    )

    def answer(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=body)

    page.route(RP_PAGE, answer)
    page.goto(RP_PAGE)
    page.get_by_role("button", name="Go").click()


def _signed_in(live_idp: LiveIdp, accounts: Accounts, rp: RelyingParty, user: BrowserUser) -> str:
    """A password sign-in to ``rp``: the browser holds idp's session cookie; the ID token."""
    authorization = rp.authorization()
    user.page.goto(authorization.url)
    user.page.get_by_role("button", name="Use your password instead").click()
    user.page.fill("#email", accounts.new())
    user.page.fill("#password", PASSWORD)
    user.page.get_by_role("button", name="Sign in", exact=True).click()
    user.page.wait_for_url(f"{rp.redirect_uri}?*")
    tokens = requests.post(
        live_idp.discovery()["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": rp.callback(authorization.state)["code"],
            "redirect_uri": rp.redirect_uri,
            "code_verifier": authorization.verifier,
        },
        auth=(rp.client_id, rp.client_secret),
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["id_token"])


def test_an_authorization_request_posted_from_another_site_sees_the_session(
    live_idp: LiveIdp, accounts: Accounts, relying_party: RelyingParty, new_user: NewUser
) -> None:
    user = new_user()
    _signed_in(live_idp, accounts, relying_party, user)

    # prompt=none: only the session can answer it. Without idp's own page posting it again the
    # browser sent no cookie, and the answer was login_required.
    silent = relying_party.authorization(prompt="none")
    endpoint, _, query = silent.url.partition("?")
    _post_from_another_site(user.page, endpoint, dict(parse_qsl(query)))
    user.page.wait_for_url(f"{relying_party.redirect_uri}?*")
    user.screenshot("callback")

    assert "code" in relying_party.callback(silent.state), relying_party.callback(silent.state)
    relying_party.redeem(silent)


def test_a_logout_posted_from_another_site_ends_the_session(
    live_idp: LiveIdp, accounts: Accounts, new_user: NewUser
) -> None:
    with callback_server() as (base, callbacks):
        client = live_idp.create_client(
            name="Posting RP", redirect_uris=[base + "/callback"],
            post_logout_redirect_uris=[base + "/callback"], first_party=True,
        )  # fmt: skip
        rp = RelyingParty(live_idp, base, client["client_id"], client["client_secret"], callbacks)
        user = new_user()
        id_token = _signed_in(live_idp, accounts, rp, user)
        user.page.goto(f"{live_idp.url}/account")
        assert urlsplit(user.page.url).path == "/account", user.page.url
        cookie = {c["name"]: c["value"] for c in user.page.context.cookies()}["idp_session"]

        # RP-Initiated Logout 1.0 section 2: the end-session endpoint takes POST. With its ID
        # token as the hint, idp signs the user out without asking and sends them back. Without
        # the session the browser withheld, idp sent them back as if it had, and the session
        # stayed.
        logout = live_idp.discovery()["end_session_endpoint"]
        fields = {"id_token_hint": id_token, "post_logout_redirect_uri": rp.redirect_uri,
                  "state": "posted"}  # fmt: skip
        _post_from_another_site(user.page, logout, fields)
        user.page.wait_for_url(f"{rp.redirect_uri}?state=posted")

    user.page.goto(f"{live_idp.url}/account")
    assert urlsplit(user.page.url).path == "/login", user.page.url
    user.screenshot("signed-out")
    # Ended at idp, not only forgotten by the browser: the logout's answer deletes the cookie
    # even when the request carried none, which hid that the session lived on (and that no app
    # was told by back-channel logout).
    again = requests.get(f"{live_idp.url}/account", cookies={"idp_session": cookie},
                         allow_redirects=False, timeout=10)  # fmt: skip
    assert again.status_code in (302, 303), again.status_code
    assert urlsplit(again.headers["Location"]).path == "/login", again.headers["Location"]
