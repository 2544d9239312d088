"""A password changed or removed ends the other sessions whose sign-in used it (docs/security.md,
"Sessions"): a user changes a password because someone else may know it, and whoever signed in
with it must not stay signed in, as a removed passkey's sessions end with it. The browser that
made the change stays, and so do the sessions signed in another way. Through HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

import pytest
from flask import Flask

from idp.models import AuditEvent, BrowserSession, Grant
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token
from tests.support.passkey_flow import PasskeyPages


def signed_in(pages: PasskeyPages) -> bool:
    page = pages.browser.get("/account")
    assert page.status_code in (200, 302), page.status_code
    return page.status_code == 200


def post_account_form(pages: PasskeyPages, action: str, **form: str) -> int:
    token = csrf_token(pages.browser.get("/account").text)
    response = pages.browser.post(action, data={"csrf_token": token, **form})
    assert response.status_code == 302, response.text
    return response.status_code


@pytest.mark.parametrize("ending", ["change", "removal"])
def test_a_password_changed_or_removed_ends_the_other_sessions_signed_in_with_it(
    storage_app: Flask, ending: str
) -> None:
    """The desk computer (and whoever else learned the password) signed in with the password;
    the laptop and the tablet with a passkey. The laptop changes or removes the password: the
    desk is signed out as every ending signs out (its app's grant ends), the laptop and the
    tablet stay, and the audit row counts the ending."""
    app = storage_app
    user = create_user(app, email="ada@example.com")
    desk, laptop, tablet = (PasskeyPages(app.test_client()) for _ in range(3))
    key = SoftAuthenticator()
    desk.sign_in_with_password(user)  # before the account had a passkey: no second step
    rp = RelyingParty(desk.browser, create_client(app))
    tokens = rp.tokens_for(user, scope="openid")
    laptop.sign_in_with_password(user)
    assert laptop.add_passkey(key).status_code == 201
    assert laptop.sign_in_with_passkey(key).status_code == 200  # the step-up a passkey asks
    assert tablet.sign_in_with_passkey(key).status_code == 200
    assert all(signed_in(p) for p in (desk, laptop, tablet))

    if ending == "change":
        post_account_form(laptop, "/account/password", new_password="an entirely new phrase 7")
    else:
        post_account_form(laptop, "/account/password/remove", confirm="yes")

    assert not signed_in(desk)
    assert signed_in(laptop)
    assert signed_in(tablet)
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    [grant] = rows(app, Grant)
    assert grant.revoked_reason == "password_replaced"
    kind = {"change": "password.changed", "removal": "password.removed"}[ending]
    [audited] = rows(app, AuditEvent, AuditEvent.kind == kind)
    assert audited.details["sessions_ended"] == 1


def test_the_browser_that_changes_the_password_stays_signed_in(storage_app: Flask) -> None:
    """A password-only account changes its password in a browser signed in with it (its
    strongest way in, so the step-up): that browser stays signed in, the other one signed in
    with the old password does not."""
    app = storage_app
    user = create_user(app, email="grace@example.com")
    here, there = PasskeyPages(app.test_client()), PasskeyPages(app.test_client())
    there.sign_in_with_password(user)
    here.sign_in_with_password(user)
    post_account_form(here, "/account/password", new_password="an entirely new phrase 7")
    assert signed_in(here)
    assert not signed_in(there)
    live = rows(app, BrowserSession, BrowserSession.revoked_at.is_(None))
    assert len(live) == 1
