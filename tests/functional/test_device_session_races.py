"""A device approval racing the end of the session that approves it (docs/security.md, "Device
authorization grant"): real parallel requests on SQLite and PostgreSQL, the approval held where its
session was accepted (idp.services.device.DECIDE_CHECKPOINT) while an admin ends that session, to
its commit. Never a sleep: the test waits for arrivals and finished requests."""

from __future__ import annotations

from flask import Flask

from idp.models import BrowserSession, Grant
from idp.services.device import DECIDE_CHECKPOINT
from tests.functional.test_device_flow import device_for, enter_code, error_of
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import create_user, rows
from tests.support.flow import csrf_token, start_session


def test_an_approval_racing_the_end_of_its_session_grants_nothing(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The approval's session was accepted, then an admin ended that session (its grants revoked,
    its clients told: Back-Channel Logout 1.0 2.7, RP-Initiated Logout 2), then the approval
    opened its grant in it: the device got tokens from a session that had ended, with a ``sid``
    no logout token would ever name again. The approval must see the ending, or the ending the
    approval; the device gets nothing, and its request still waits for a signed-in answer."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    [session] = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)
    codes = device.codes("openid profile")
    review = enter_code(phone, codes["user_code"])
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": csrf_token(review.text), "authorization": authorization,
            "decision": "approve"}  # fmt: skip

    def end_the_session() -> None:
        ended = admin.post(f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid})
        assert ended.status_code < 400

    answer = answered_while_held(
        checkpoints, DECIDE_CHECKPOINT, lambda: phone.post("/device/decide", data=form),
        end_the_session,
    )  # fmt: skip
    assert answer.status_code == 400
    assert rows(storage_app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None)) == []
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
    # Signed in again, the user can still answer the device.
    start_session(phone, user)
    assert enter_code(phone, codes["user_code"]).status_code == 200
