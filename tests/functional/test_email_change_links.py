"""A one-time link is bound to the address it was mailed to (docs/security.md, "Mail and email
addresses"): an email change ends the user's unspent rescue links, counted in its audit row, so
the old mailbox holds no bearer secret to the account. On SQLite and PostgreSQL."""

from __future__ import annotations

from flask import Flask

from idp.extensions import db
from idp.models import AuditEvent, User
from idp.models.base import utcnow
from idp.services.login_links import LoginLinkService
from tests.functional.test_email_addresses import ask_change, confirm, mailed_link
from tests.support.factories import CreatedUser, create_user, rows
from tests.support.flow import csrf_token, start_session


def _rescue_link(app: Flask, user: CreatedUser) -> str:
    """An admin's rescue link for ``user`` (mailed to the address the account has now)."""
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        _link, secret = LoginLinkService(db.session()).issue(row, ttl=86400, now=utcnow())
        db.session.commit()
        return f"/login/link/{secret}"


def _spends(app: Flask, path: str) -> int:
    browser = app.test_client()
    form = {"csrf_token": csrf_token(browser.get("/login").text)}
    return browser.post(path, data=form).status_code


def test_an_email_change_ends_the_rescue_links_mailed_to_the_old_address(
    storage_app: Flask,
) -> None:
    """The user moves off a mailbox they lost or share (or that was taken over) while a rescue
    link sent to it waits there for up to a day: once the account's address is another, that
    link signs nobody in (its session would add a passkey: the account). Another user's link
    stays."""
    user = create_user(storage_app, email="ada@example.com")
    other = create_user(storage_app, email="grace@example.com")
    browser = storage_app.test_client()
    start_session(browser, user)  # signed in before the links were sent: they are still live
    ask_change(browser, "ada@new.example")
    old_mailbox, others = _rescue_link(storage_app, user), _rescue_link(storage_app, other)
    assert storage_app.test_client().get(old_mailbox).status_code == 200

    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 302

    assert storage_app.test_client().get(old_mailbox).status_code == 400
    assert _spends(storage_app, old_mailbox) == 400
    assert _spends(storage_app, others) == 302
    [changed] = rows(storage_app, AuditEvent, AuditEvent.kind == "email.changed",
                     AuditEvent.subject_id == user.id)  # fmt: skip
    assert (changed.details or {}).get("links_revoked") == 1
