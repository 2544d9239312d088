"""New backup codes end the sessions the old ones opened (docs/security.md, "Sessions"): a user
asks for new codes because the old ones may be known to someone else, and whoever got in with
one of them must not stay in. Through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from idp.clock import FrozenClock
from idp.models import AuditEvent, BrowserSession
from tests.functional.test_fallback import (
    BACKUP_CODE,
    password_step,
    path_of,
    post_form,
    recover,
    second_step,
    signed_in_with_totp,
    user_with_totp,
)
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import rows
from tests.support.passkey_flow import PasskeyPages


def _live(app: Flask, user_id: str) -> list[BrowserSession]:
    return rows(app, BrowserSession, BrowserSession.user_id == user_id,
                BrowserSession.revoked_at.is_(None))  # fmt: skip


def _signed_in(browser: FlaskClient) -> bool:
    page = browser.get("/account")
    assert page.status_code in (200, 302), page.status_code
    return page.status_code == 200


def test_new_backup_codes_end_every_other_session_a_backup_code_opened(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Someone recovered with an old code and stayed in the restricted session, someone else
    recovered and added a passkey (a full session now), and a third finished a password's second
    step with a code. The owner, signed in with a passkey, gets new codes: the three sessions
    end as every ending does, the owner's stays, and so does a session the authenticator app
    opened; the audit row counts the ending."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    user = enrolled.user
    phone = signed_in_with_totp(app, enrolled, clock)

    restricted = app.test_client()
    assert path_of(recover(restricted, user.email, enrolled.codes[0])) == "/account/recover"
    promoted = PasskeyPages(app.test_client())
    assert path_of(recover(promoted.browser, user.email, enrolled.codes[1])) == "/account/recover"
    key = SoftAuthenticator()
    assert promoted.add_passkey(key).status_code == 201
    assert _signed_in(promoted.browser)  # a full session now
    # The owner's laptop signs in with a passkey (the step-up the account asks for now).
    laptop = PasskeyPages(app.test_client())
    assert laptop.sign_in_with_passkey(key).status_code == 200
    second = app.test_client()
    assert path_of(password_step(second, user.email, user.password)) == "/login/second-step"
    assert path_of(second_step(second, enrolled.codes[2], method="backup_code")) == "/account"
    assert _signed_in(second)
    opened_with_codes = {s.sid for s in _live(app, user.id) if s.backup_code}
    assert len(opened_with_codes) == 3

    answer = post_form(laptop.browser, "/account", "/account/backup-codes", confirm="yes")
    assert answer.status_code == 200, answer.text
    assert len(BACKUP_CODE.findall(answer.text)) == 10

    live = {s.sid for s in _live(app, user.id)}
    assert live
    assert not live & opened_with_codes
    assert not _signed_in(second)
    assert not _signed_in(promoted.browser)
    assert path_of(restricted.get("/account/recover")) == "/login"
    assert _signed_in(laptop.browser)
    assert _signed_in(phone)
    [audited] = rows(app, AuditEvent, AuditEvent.kind == "backup_codes.regenerated")
    assert audited.details["sessions_ended"] == 3


def test_new_backup_codes_keep_the_session_that_asked_for_them(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A session opened with a backup code that asks for new codes (its step-up passed) stays:
    only the other sessions the old codes opened end."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    browser = app.test_client()
    assert path_of(password_step(browser, enrolled.user.email, enrolled.user.password)) == (
        "/login/second-step"
    )
    assert path_of(second_step(browser, enrolled.codes[0], method="backup_code")) == "/account"
    other = app.test_client()
    assert path_of(password_step(other, enrolled.user.email, enrolled.user.password)) == (
        "/login/second-step"
    )
    assert path_of(second_step(other, enrolled.codes[1], method="backup_code")) == "/account"

    answer = post_form(browser, "/account", "/account/backup-codes", confirm="yes")
    assert answer.status_code == 200, answer.text
    assert _signed_in(browser)
    assert not _signed_in(other)
