"""Removing a passkey ends the sessions it signed in (docs/security.md, "Sessions"): a user who
lost a phone removes its passkey, in the portal or through an admin, and the phone is signed out
as every ending signs out (its grants end, its clients are told by back-channel logout), while
the browsers signed in another way stay signed in. The browser that removes the passkey it
signed in with is signed out too, and told so (idp.services.sessions.end_passkey_sessions).
Through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import AuditEvent, BrowserSession, Grant, User
from idp.models.base import utcnow
from idp.services.login_links import LoginLinkService
from tests.functional.test_backchannel_logout import drain, sid_of, verified
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token
from tests.support.logout_receiver import LogoutReceiver, logout_receiver
from tests.support.passkey_flow import PasskeyPages


@pytest.fixture
def receiver() -> Iterator[LogoutReceiver]:
    with logout_receiver() as running:
        yield running


@dataclass
class Devices:
    """One user's browsers: a laptop signed in with its own passkey, a phone signed in with the
    phone's passkey, and a desk computer signed in with the password."""

    user: CreatedUser
    laptop: PasskeyPages
    laptop_key: SoftAuthenticator
    phone: PasskeyPages
    phone_key: SoftAuthenticator
    desk: PasskeyPages


def devices(app: Flask, email: str = "ada@example.com") -> Devices:
    user = create_user(app, email=email)
    laptop, phone, desk = (PasskeyPages(app.test_client()) for _ in range(3))
    laptop_key, phone_key = SoftAuthenticator(), SoftAuthenticator()
    desk.sign_in_with_password(user)  # before the account had a passkey: no second step
    laptop.sign_in_with_password(user)
    assert laptop.add_passkey(laptop_key).status_code == 201
    assert laptop.sign_in_with_passkey(laptop_key).status_code == 200
    assert laptop.add_passkey(phone_key).status_code == 201  # set up from the laptop
    assert phone.sign_in_with_passkey(phone_key).status_code == 200
    found = Devices(user, laptop, laptop_key, phone, phone_key, desk)
    assert all(signed_in(p) for p in (found.laptop, found.phone, found.desk))
    return found


def signed_in(pages: PasskeyPages) -> bool:
    page = pages.browser.get("/account")
    assert page.status_code in (200, 302), page.status_code
    return page.status_code == 200


def remove(pages: PasskeyPages, credential_id: str, confirm: bool = True) -> TestResponse:
    form = {"csrf_token": csrf_token(pages.browser.get("/account").text)}
    return pages.browser.post(
        f"/account/passkeys/{credential_id}/remove", data={**form, "confirm": "yes"} if confirm
        else form,
    )  # fmt: skip


def removal_audit(app: Flask, kind: str) -> AuditEvent:
    [event] = rows(app, AuditEvent, AuditEvent.kind == kind)
    return event


def test_removing_a_passkey_in_the_portal_ends_the_sessions_it_signed_in(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """The phone is lost: its passkey, removed on the laptop, signs the phone out as every
    ending does (its app's grant ends, the app is told by back-channel logout); the laptop and
    the desk, signed in another way, stay signed in, and the audit row counts the ending."""
    app = storage_app
    ada = devices(app)
    wiki = create_client(app, backchannel_logout_uri=receiver.url("/wiki"))
    rp = RelyingParty(ada.phone.browser, wiki)
    tokens = rp.tokens_for(ada.user, scope="openid profile")  # an app used on the phone
    [phone_credential] = ada.phone_key.credential_ids()

    asked = remove(ada.laptop, phone_credential, confirm=False)
    assert "wherever you signed in with it you are signed out" in asked.text
    assert "in this browser" not in asked.text  # the laptop signed in with its own passkey
    response = remove(ada.laptop, phone_credential)
    assert (response.status_code, response.headers["Location"]) == (302, "/account")

    assert not signed_in(ada.phone)
    assert signed_in(ada.laptop)
    assert signed_in(ada.desk)
    [ended] = rows(app, BrowserSession, BrowserSession.credential_id == phone_credential)
    assert (ended.sid, ended.revoked_at is not None) == (sid_of(tokens), True)
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    [grant] = rows(app, Grant)
    assert grant.revoked_reason == "passkey_removed"
    drain(app)
    [token] = receiver.tokens("/wiki")
    assert verified(app, token, wiki)["sid"] == sid_of(tokens)
    removed = removal_audit(app, "passkey.removed")
    assert removed.details["credential_id"] == phone_credential
    assert removed.details["sessions_ended"] == 1


def test_removing_the_passkey_this_browser_signed_in_with_signs_it_out_and_says_so(
    storage_app: Flask,
) -> None:
    """The browser whose session that passkey signed in is signed out too, but never in a
    confusing way: the confirmation says so first, and the answer is the sign-in page with the
    user's address and why, and back to the account page after; the phone, signed in with
    another passkey, stays signed in."""
    app = storage_app
    ada = devices(app)
    [laptop_credential] = ada.laptop_key.credential_ids()

    asked = remove(ada.laptop, laptop_credential, confirm=False)
    assert "here too: you signed in with it in this browser" in asked.text
    response = remove(ada.laptop, laptop_credential)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?")
    assert "login_hint=ada@example.com" in response.headers["Location"]
    cleared = response.headers.getlist("Set-Cookie")
    assert any(c.startswith("idp_session=;") for c in cleared), cleared
    login_page = ada.laptop.browser.get(response.headers["Location"]).text
    assert "You had signed in with it in this browser, so you are signed out here" in login_page
    assert not signed_in(ada.laptop)
    assert signed_in(ada.phone)
    assert signed_in(ada.desk)
    assert removal_audit(app, "passkey.removed").details["sessions_ended"] == 1
    # Another way in is always left (idp.services.method_removal): the phone's passkey.
    assert ada.laptop.sign_in_with_passkey(ada.phone_key).status_code == 200
    assert signed_in(ada.laptop)


def test_an_admin_removing_a_passkey_ends_the_sessions_it_signed_in(
    storage_app: Flask,
) -> None:
    """The user tells the help desk the phone is gone: the admin's removal in the console signs
    the phone out as the user's own removal would, and the admin's audit row counts it."""
    app = storage_app
    admin = passkey_browser(app, "root@example.com")
    ada = devices(app)
    [phone_credential] = ada.phone_key.credential_ids()
    response = admin.post(
        f"/admin/users/{ada.user.id}/passkeys/revoke",
        {"credential_id": phone_credential, "confirm": "yes"},
    )
    assert response.status_code == 303
    assert not signed_in(ada.phone)
    assert signed_in(ada.laptop)
    assert signed_in(ada.desk)
    assert admin.browser.get("/admin").status_code == 200  # the admin's own session stays
    revoked = removal_audit(app, "admin.passkey_revoked")
    assert revoked.details["sessions_ended"] == 1


def test_a_rescue_session_made_full_by_its_new_passkey_ends_when_that_passkey_is_removed(
    storage_app: Flask,
) -> None:
    """A rescue link's session becomes a full one by adding a passkey (the holder of a stolen
    link, or a user on a phone): that session records the passkey it added, so removing the
    passkey from another browser signs it out, as a sign-in with it would have been."""
    user = create_user(storage_app)
    laptop = PasskeyPages(storage_app.test_client())
    laptop.sign_in_with_password(user)
    laptop_key = SoftAuthenticator()
    assert laptop.add_passkey(laptop_key).status_code == 201
    assert laptop.sign_in_with_passkey(laptop_key).status_code == 200
    phone = PasskeyPages(storage_app.test_client())
    form = {"csrf_token": csrf_token(phone.browser.get("/login").text)}
    assert phone.browser.post(f"/login/link/{_rescue_link(storage_app, user)}",
                              data=form).status_code == 302  # fmt: skip
    phone_key = SoftAuthenticator()
    assert phone.add_passkey(phone_key).status_code == 201
    assert signed_in(phone)
    [phone_credential] = phone_key.credential_ids()
    [recorded] = rows(storage_app, BrowserSession, BrowserSession.credential_id == phone_credential)
    assert recorded.restricted is False

    assert remove(laptop, phone_credential).status_code == 302

    assert not signed_in(phone)
    assert signed_in(laptop)


def _rescue_link(app: Flask, user: CreatedUser) -> str:
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        _link, secret = LoginLinkService(db.session()).issue(row, ttl=3600, now=utcnow())
        db.session.commit()
        return secret
