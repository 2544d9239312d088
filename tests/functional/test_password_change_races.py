"""A password sign-in already past its hash check when a password change commits opens no
session (docs/security.md, "Sign-in, passkeys and assurance"): the change ended every session
and waiting second step the old password had opened, before this sign-in had either, so the
step that opens its session finds the password replaced and refuses. Real parallel requests on
SQLite and PostgreSQL: the sign-in held at the checkpoint after its hash was verified
(idp.services.sign_in ``PASSWORD_CHECKED_CHECKPOINT``) while the change commits; never a sleep."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from idp.clock import FrozenClock
from idp.models import AuditEvent, BrowserSession, User
from idp.services import sign_in as messages
from idp.services.passwords import PasswordService
from idp.services.sign_in import PASSWORD_CHECKED_CHECKPOINT
from tests.functional.test_fallback import (
    STEP,
    password_step,
    path_of,
    post_form,
    second_step,
    signed_in_with_totp,
    text_of,
    totp,
    user_with_totp,
)
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import CreatedUser, change, create_user, rows
from tests.support.flow import start_session

NEW_PASSWORD = "an entirely new phrase 7"


def _live_sessions(app: Flask, user_id: str) -> list[BrowserSession]:
    return rows(app, BrowserSession, BrowserSession.user_id == user_id,
                BrowserSession.revoked_at.is_(None))  # fmt: skip


def _changed_while_held(
    checkpoints: Checkpoints, app: Flask, intruder: FlaskClient, owner: FlaskClient,
    user: CreatedUser,
) -> str:  # fmt: skip
    """The intruder's password step with the old password, held once its hash was verified
    while the owner changes the password to its commit; where the step's answer sends the
    intruder (or the status of a page)."""

    def change() -> None:
        changed = post_form(owner, "/account", "/account/password", new_password=NEW_PASSWORD)
        assert changed.status_code == 302, changed.text

    answer = answered_while_held(
        checkpoints, PASSWORD_CHECKED_CHECKPOINT,
        lambda: password_step(intruder, user.email, user.password), change,
    )  # fmt: skip
    if answer.status_code == 401:
        assert messages.GENERIC_FAILURE in text_of(answer)
        return "401"
    return path_of(answer)


def test_a_password_sign_in_in_flight_when_the_password_changes_opens_no_session(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """An account with no second step: the sign-in checked the old password, the change
    committed, then the sign-in went on to open its session. It is refused, audited, and opens
    nothing; the owner stays signed in and the new password signs in."""
    app = storage_app
    user = create_user(app)
    owner = app.test_client()
    start_session(owner, user)
    intruder = app.test_client()

    assert _changed_while_held(checkpoints, app, intruder, owner, user) == "401"
    [owners] = _live_sessions(app, user.id)
    assert intruder.get("/account").status_code == 302
    assert owner.get("/account").status_code == 200
    refused = rows(app, AuditEvent, AuditEvent.kind == "login.password",
                   AuditEvent.outcome == "failure")  # fmt: skip
    assert [event.details["reason"] for event in refused] == ["password_changed"]
    renewed = CreatedUser(id=user.id, email=user.email, password=NEW_PASSWORD)
    assert path_of(password_step(app.test_client(), renewed.email, renewed.password)) != "/login"
    assert owners.sid in {s.sid for s in _live_sessions(app, user.id)}


def test_a_second_step_begun_on_a_password_replaced_while_it_was_checked_opens_no_session(
    storage_app: Flask, checkpoints: Checkpoints, clock: FrozenClock
) -> None:
    """An account with an authenticator app: the sign-in checked the old password, the change
    committed (ending the waiting second steps, of which this one was not yet), then the sign-in
    began its second step. The right code finishes nothing: the password it rests on is no
    longer the user's."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    owner = signed_in_with_totp(app, enrolled, clock)
    clock.advance(STEP)
    intruder = app.test_client()

    where = _changed_while_held(checkpoints, app, intruder, owner, enrolled.user)
    assert where == "/login/second-step"
    before = {s.sid for s in _live_sessions(app, enrolled.user.id)}
    finished = second_step(intruder, totp(enrolled.secret, clock.now()))
    assert path_of(finished) == "/login"
    assert {s.sid for s in _live_sessions(app, enrolled.user.id)} == before
    assert intruder.get("/account").status_code == 302
    assert owner.get("/account").status_code == 200


def test_a_hash_renewed_by_a_sign_in_in_flight_does_not_undo_a_password_change(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The old password's hash was made with older Argon2 parameters, so the sign-in that
    checked it renews it: written while a change committed, the renewal put the old password
    back in place of the new one. It is written only over the password it checked: the new
    password signs in, the old one does not."""
    app = storage_app
    user = create_user(app)
    owner = app.test_client()
    start_session(owner, user)
    older = PasswordService(memory_kib=2048, time_cost=2, parallelism=1).hash(user.password)
    change(app, update(User).where(User.id == user.id).values(password_hash=older))

    assert _changed_while_held(checkpoints, app, app.test_client(), owner, user) == "401"
    [stored] = rows(app, User, User.id == user.id)
    assert stored.password_hash != older
    old = password_step(app.test_client(), user.email, user.password)
    assert old.status_code == 401
    assert path_of(password_step(app.test_client(), user.email, NEW_PASSWORD)) != "/login"
