"""A sign-in or a device approval racing an admin's "disable user" (docs/security.md,
"Sessions"): real parallel requests on SQLite and PostgreSQL, the sign-in held at the checkpoint
where it has read the account as active (idp.services.sign_in.CHECKPOINT), the approval where its
session was accepted (idp.services.device.DECIDE_CHECKPOINT), while the disable runs to its
commit. Never a sleep: the test waits for arrivals and finished requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.checkpoints import CHECKPOINT_DIR_ENV
from idp.models import BrowserSession, Grant
from idp.services.device import DECIDE_CHECKPOINT
from idp.services.sign_in import CHECKPOINT
from idp.services.users import EMAIL_FREE_CHECKPOINT
from tests.functional.test_device_flow import device_for, enter_code, error_of
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, start_session

WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim


@pytest.fixture
def checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Checkpoints:
    held = Checkpoints(tmp_path / "checkpoints")
    # The variable reaches every checkpoint: each starts released.
    held.open_all(CHECKPOINT, EMAIL_FREE_CHECKPOINT, DECIDE_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(held.directory))
    return held


def _disabled_while_held(
    checkpoints: Checkpoints, checkpoint: str, request: Callable[[], Any], admin: FlaskClient,
    user_id: str,
) -> dict[str, Any]:  # fmt: skip
    """``request`` sent in a thread of its own and held at ``checkpoint`` while the admin disables
    the user; once it has finished, its ``answer`` (it raised nothing)."""
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["answer"] = request()
        except Exception as error:  # reported in the test's thread
            outcome["error"] = error

    with checkpoints.holding(checkpoint):
        thread = threading.Thread(target=send)
        thread.start()
        wait_until(lambda: checkpoints.arrivals(checkpoint) >= 1 or not thread.is_alive(),
                   f"the request reached {checkpoint}")  # fmt: skip
        assert thread.is_alive(), outcome
        assert admin.post(f"/admin/users/{user_id}/disable").status_code == 303
    thread.join(WAIT_LIMIT)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome
    return outcome


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
    outcome = _disabled_while_held(
        checkpoints, CHECKPOINT, lambda: rp.sign_in(address, user), admin, user.id
    )
    assert outcome["answer"].status_code in (302, 303), outcome["answer"].text
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
    outcome = _disabled_while_held(
        checkpoints, DECIDE_CHECKPOINT, lambda: phone.post("/device/decide", data=form), admin,
        user.id,
    )  # fmt: skip
    # The disable ended the approval's session, which the approval finds ended when it locks
    # it (docs/security.md, "Device authorization grant"): it opens no grant at all.
    assert outcome["answer"].status_code == 400
    assert rows(storage_app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None)) == []

    assert admin.post(f"/admin/users/{user.id}/enable").status_code == 303
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
