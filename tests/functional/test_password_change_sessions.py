"""A password changed or removed ends the other sessions whose sign-in used it (docs/security.md,
"Sessions"): a user changes a password because someone else may know it, and whoever signed in
with it must not stay signed in, as a removed passkey's sessions end with it. The browser that
made the change stays, and so do the sessions signed in another way. Through HTTP, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, update

from idp.account.blueprint import PROMOTED_CHECKPOINT
from idp.models import AuditEvent, BackupCode, BrowserSession, Grant, Passkey
from idp.models.base import utcnow
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, in_thread, wait_until
from tests.support.factories import change, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import waits_for_a_lock


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


def test_a_password_change_racing_a_passkey_added_in_a_restricted_password_session_ends_it(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A restricted session opened by the password (its only second step, a passkey, was flagged
    as a possible clone) adds a passkey while the owner, signed in elsewhere, changes the
    password. Adding the passkey takes the user's row before its session's, in the order a
    change of sign-in methods takes them (idp.services.user_locks): taken the other way round,
    the two waited for each other on PostgreSQL (a deadlock, one of them refused). Here the
    change waits, then ends the full session the old password's passkey opened, never an error
    (real parallel requests, the addition held once it promoted its session)."""
    app = storage_app
    user = create_user(app, email="ada@example.com")
    owner, thief = PasskeyPages(app.test_client()), PasskeyPages(app.test_client())
    lost = SoftAuthenticator()
    owner.sign_in_with_password(user)
    assert owner.add_passkey(lost).status_code == 201
    assert owner.sign_in_with_passkey(lost).status_code == 200
    change(app, update(Passkey).values(flagged_at=utcnow(), flagged_reason="test"))
    change(app, delete(BackupCode))
    assert thief.sign_in_with_password(user).headers["Location"] == "/account/recover"
    token = csrf_token(owner.browser.get("/account").text)
    outcome: dict[str, Any] = {}

    def change_password() -> int:
        form = {"csrf_token": token, "new_password": "an entirely new phrase 7"}
        return owner.browser.post("/account/password", data=form).status_code

    with checkpoints.holding(PROMOTED_CHECKPOINT):
        adding = in_thread(outcome, "added", lambda: thief.add_passkey(SoftAuthenticator()))
        wait_until(lambda: checkpoints.arrivals(PROMOTED_CHECKPOINT) == 1, "the promotion")
        changing = in_thread(outcome, "changed", change_password)
        wait_until(lambda: waits_for_a_lock(app, changing) or not changing.is_alive(),
                   "the change waiting for the addition")  # fmt: skip
    for thread in (adding, changing):
        thread.join(60)
        assert not thread.is_alive()
    assert "added error" not in outcome, outcome
    assert "changed error" not in outcome, outcome
    assert (outcome["added"].status_code, outcome["changed"]) == (201, 302)
    assert signed_in(owner)
    assert not signed_in(thief)
    [audited] = rows(app, AuditEvent, AuditEvent.kind == "password.changed")
    assert audited.details["sessions_ended"] == 1
