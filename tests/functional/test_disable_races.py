"""A sign-in or a device approval racing an admin's "disable user" (docs/security.md,
"Sessions"): real parallel requests on SQLite and PostgreSQL, the sign-in held at the checkpoint
where it has read the account as active (idp.services.sign_in.CHECKPOINT), the approval where its
session was accepted (idp.services.device.DECIDE_CHECKPOINT), while the disable runs to its
commit. Never a sleep: the test waits for arrivals and finished requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from idp.models import BrowserSession, Grant
from idp.services.device import DECIDE_CHECKPOINT
from idp.services.sign_in import CHECKPOINT
from tests.functional.test_device_flow import device_for, enter_code, error_of
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, start_session


def _disabled_while_held(
    checkpoints: Checkpoints, checkpoint: str, request: Callable[[], Any], admin: FlaskClient,
    user_id: str,
) -> Any:  # fmt: skip
    """``request`` held at ``checkpoint`` while the admin disables the user; its answer."""

    def disable() -> None:
        assert admin.post(f"/admin/users/{user_id}/disable").status_code == 303

    return answered_while_held(checkpoints, checkpoint, request, disable)


def test_a_sign_in_racing_a_disable_is_not_alive_once_the_user_is_enabled(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The sign-in read the account as active, then the disable ended every session and grant,
    then the sign-in committed its session (and the authorization request's grant): enabling the
    account must not bring that session, or anything issued in it, back to life."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    address = rp.sign_in_page()
    answer = _disabled_while_held(
        checkpoints, CHECKPOINT, lambda: rp.sign_in(address, user), admin, user.id
    )
    assert answer.status_code in (302, 303), answer.text
    # The race happened: the sign-in's session was stored after the disable ended the others.
    assert [s for s in rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)
            if s.revoked_at is None]  # fmt: skip
    # While disabled, the loader refuses it.
    assert rp.browser.get("/account").status_code == 302

    assert admin.post(f"/admin/users/{user.id}/enable").status_code == 303
    assert rp.browser.get("/account").status_code == 302  # signed out, not back in
    live = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id,
                BrowserSession.revoked_at.is_(None))  # fmt: skip
    assert live == []
    assert rows(storage_app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None)) == []
    # The account itself is back: a new sign-in works.
    assert RelyingParty(storage_app.test_client(), rp.registered).tokens_for(user)["access_token"]


def test_a_device_approval_racing_a_disable_gets_no_tokens_once_the_user_is_enabled(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The approval's session was accepted, then the disable ended every session and grant, then
    the approval went on (RFC 8628 3.3): once the account is enabled, the device that polls gets
    no token from it."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    codes = device.codes()
    review = enter_code(phone, codes["user_code"])
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": csrf_token(review.text), "authorization": authorization,
            "decision": "approve"}  # fmt: skip
    answer = _disabled_while_held(
        checkpoints, DECIDE_CHECKPOINT, lambda: phone.post("/device/decide", data=form), admin,
        user.id,
    )  # fmt: skip
    # The disable ended the approval's session, which the approval finds ended when it locks
    # it (docs/security.md, "Device authorization grant"): it opens no grant at all.
    assert answer.status_code == 400
    assert rows(storage_app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None)) == []

    assert admin.post(f"/admin/users/{user.id}/enable").status_code == 303
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
