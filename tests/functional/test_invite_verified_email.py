"""Which invites prove the address (OIDC Core 5.1 ``email_verified``, docs/admins.md). An invite's
URL handed to the caller (the admin API's answer, the console's page) proves only that its holder
had the URL: the account it makes starts unverified, and its owner confirms the address from the
portal with the email confirmation link. An invite only idp's mail delivered proves the mailbox.
Checked through the ID token and UserInfo a relying party reads, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from idp.extensions import db
from idp.models import OutboxMessage
from tests.functional.test_api import Api, issue
from tests.functional.test_invites import ISSUED, accept
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import create_client
from tests.support.flow import RelyingParty, csrf_token, jwt_parts
from tests.support.passkey_flow import PasskeyPages

INVITE_LINK = re.compile(r"/invite/([A-Za-z0-9_-]+)")
CONFIRM_LINK = re.compile(r"/account/email/confirm\?token=([A-Za-z0-9_-]+)")


def _mailed(app: Flask, kind: str, pattern: re.Pattern[str]) -> str:
    """The secret in the newest ``kind`` message of the outbox."""
    with app.app_context():
        bodies = db.session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
        ).all()
    match = pattern.search(bodies[-1])
    assert match, bodies[-1]
    return match.group(1)


def _join(app: Flask, secret: str) -> FlaskClient:
    """Accept the invite and add the first passkey: a browser with a full session."""
    browser = app.test_client()
    assert accept(browser, secret)[0] == 302
    assert PasskeyPages(browser).add_passkey(SoftAuthenticator()).status_code == 201
    assert browser.get("/account").status_code == 200
    return browser


def _verified(app: Flask, browser: FlaskClient) -> bool:
    """``email_verified`` as an app reads it: the ID token and UserInfo agree."""
    rp = RelyingParty(browser, create_client(app, name="Verified?"))
    callback = rp.follow_to_callback(rp.authorize())
    tokens = rp.exchange(callback["code"]).get_json()
    id_token: dict[str, Any] = jwt_parts(tokens["id_token"])[1]
    userinfo = rp.userinfo(tokens["access_token"]).get_json()
    assert id_token["email_verified"] is userinfo["email_verified"]
    return bool(id_token["email_verified"])


def _confirm_from_portal(app: Flask, browser: FlaskClient) -> None:
    profile = browser.get("/account/profile")
    assert 'id="confirm-email"' in profile.text
    sent = browser.post("/account/email/verify", data={"csrf_token": csrf_token(profile.text)})
    assert sent.status_code == 302
    token = _mailed(app, "email_change_requested", CONFIRM_LINK)
    page = browser.get(f"/account/email/confirm?token={token}")
    assert page.status_code == 200
    form = {"csrf_token": csrf_token(page.text), "token": token}
    assert browser.post("/account/email/confirm", data=form).status_code == 302
    assert 'id="confirm-email"' not in browser.get("/account/profile").text


def test_an_invite_handed_to_an_api_caller_leaves_the_address_unverified_until_confirmed(
    storage_app: Flask,
) -> None:
    users = Api(storage_app, issue(storage_app, "users:write", name="users"))
    created = users.call("POST", "/users", {"email": "grace@example.com"})
    assert created.status_code == 201, created.text
    secret = created.get_json()["invite"]["url"].rsplit("/", 1)[1]
    browser = _join(storage_app, secret)
    assert _verified(storage_app, browser) is False
    _confirm_from_portal(storage_app, browser)
    assert _verified(storage_app, browser) is True


def test_an_invite_shown_in_the_console_leaves_the_address_unverified_until_confirmed(
    storage_app: Flask,
) -> None:
    console = passkey_browser(storage_app, "root@example.com")
    shown = console.post("/admin/users/new", {"email": "grace@example.com", "action": "invite"})
    match = ISSUED.search(shown.text)
    assert match, shown.text
    browser = _join(storage_app, match.group(1).rsplit("/", 1)[1])
    assert _verified(storage_app, browser) is False
    _confirm_from_portal(storage_app, browser)
    assert _verified(storage_app, browser) is True


def test_an_invite_only_mailed_verifies_the_address(storage_app: Flask) -> None:
    users = Api(storage_app, issue(storage_app, "users:write", name="users"))
    body = {"email": "grace@example.com", "invite_mailed_only": True}
    created = users.call("POST", "/users", body)
    assert created.status_code == 201, created.text
    invite = created.get_json()["invite"]
    assert invite["url"] is None  # never in the answer
    assert invite["id"]
    assert "/invite/" not in created.text
    browser = _join(storage_app, _mailed(storage_app, "invite", INVITE_LINK))
    assert _verified(storage_app, browser) is True
    assert 'id="confirm-email"' not in browser.get("/account/profile").text

    console = passkey_browser(storage_app, "root@example.com")
    form = {"email": "ada@example.com", "action": "invite", "mailed_only": "on"}
    sent = console.post("/admin/users/new", form)
    assert sent.status_code == 303, sent.text  # to the user's page: no link shown
    assert "/invite/" not in console.browser.get(sent.headers["Location"]).text
    browser = _join(storage_app, _mailed(storage_app, "invite", INVITE_LINK))
    assert _verified(storage_app, browser) is True
