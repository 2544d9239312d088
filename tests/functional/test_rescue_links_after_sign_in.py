"""An unspent rescue link once its user is back in (docs/admins.md, "Rescuing a user with a
one-time login link"): a full sign-in (a passkey, a password, a restricted session that added a
way in) ends every unspent rescue link of the user, audited; a restricted session ends none.
On SQLite and PostgreSQL."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from idp.extensions import db
from idp.models import AuditEvent, LoginLink, User
from idp.models.base import utcnow
from idp.services.login_links import INVITE, LoginLinkService
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_user, rows
from tests.support.flow import csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages


def _issue(app: Flask, user: CreatedUser, purpose: str = "login") -> str:
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        _link, secret = LoginLinkService(db.session()).issue(
            row, ttl=3600, now=utcnow(), purpose=purpose
        )
        db.session.commit()
        return secret


def _works(app: Flask, secret: str) -> bool:
    """Whether the rescue link still opens (its page), without spending it."""
    return app.test_client().get(f"/login/link/{secret}").status_code == 200


def _spend(browser: FlaskClient, secret: str) -> int:
    """Its POST, with a CSRF token from the sign-in page (a refused link's page has no form)."""
    form = {"csrf_token": csrf_token(browser.get("/login").text)}
    return browser.post(f"/login/link/{secret}", data=form).status_code


def _ended_audited(app: Flask, user: CreatedUser) -> list[object]:
    ended = rows(app, AuditEvent, AuditEvent.kind == "login_link.revoked",
                 AuditEvent.subject_id == user.id)  # fmt: skip
    return [(e.details or {}).get("links") for e in ended]


def synced() -> SoftAuthenticator:
    return SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)


def test_a_passkey_sign_in_ends_the_users_unspent_rescue_links(storage_app: Flask) -> None:
    """The user found their passkey after the admin sent the link: once they sign in with it, the
    link waiting in their mailbox (or the chat it was passed on in) no longer signs anyone in as
    them; another user's link stays."""
    user = create_user(storage_app)
    other = create_user(storage_app, email="grace@example.com")
    key = synced()
    setup = PasskeyPages(storage_app.test_client())
    setup.sign_in_with_password(user)
    assert setup.add_passkey(key).status_code == 201
    secret, others = _issue(storage_app, user), _issue(storage_app, other)
    assert _works(storage_app, secret)

    assert PasskeyPages(storage_app.test_client()).sign_in_with_passkey(key).status_code == 200

    assert not _works(storage_app, secret)
    thief = storage_app.test_client()
    assert _spend(thief, secret) == 400
    assert thief.get("/account").status_code == 302  # to sign in: no session
    assert _ended_audited(storage_app, user) == [1]
    assert _works(storage_app, others)


def test_a_password_sign_in_ends_the_users_unspent_rescue_links(storage_app: Flask) -> None:
    user = create_user(storage_app)
    secret = _issue(storage_app, user)
    start_session(storage_app.test_client(), user)
    assert not _works(storage_app, secret)
    assert _ended_audited(storage_app, user) == [1]
    [link] = rows(storage_app, LoginLink, LoginLink.user_id == user.id)
    assert link.revoked_at is not None
    assert link.consumed_at is None


def test_a_rescue_that_added_a_passkey_ends_the_other_unspent_links_and_a_restricted_one_none(
    storage_app: Flask,
) -> None:
    """Two links were sent (say by two admins): the restricted session of the first ends neither;
    once it added a passkey (a full session), the second ends. An invite is no rescue link and
    is left to its own rules."""
    user = create_user(storage_app, password=None)
    first, second = _issue(storage_app, user), _issue(storage_app, user)
    _issue(storage_app, user, purpose=INVITE)
    rescued = PasskeyPages(storage_app.test_client())
    assert _spend(rescued.browser, first) == 302
    assert _works(storage_app, second)
    assert _ended_audited(storage_app, user) == []

    assert rescued.add_passkey(synced()).status_code == 201

    assert not _works(storage_app, second)
    assert _ended_audited(storage_app, user) == [1]
    [kept] = rows(storage_app, LoginLink, LoginLink.user_id == user.id,
                  LoginLink.purpose == INVITE)  # fmt: skip
    assert kept.revoked_at is None
