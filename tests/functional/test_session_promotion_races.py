"""A restricted session's promotion racing its end (docs/security.md, Sessions): real parallel
requests on SQLite and PostgreSQL, a passkey registration of a restricted session held after the
session was accepted (idp.account.passkeys.REGISTER_CHECKPOINT) while an admin, or the user in
another tab, ends that session. Never a sleep: the test waits for arrivals and finished
requests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.account.passkeys import REGISTER_CHECKPOINT
from idp.models import BrowserSession, Passkey
from tests.functional.test_fallback import path_of
from tests.functional.test_session_lifetimes import (
    browser_with,
    cookie_of,
    link_session,
    row_of,
)
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.factories import CreatedUser, create_user, rows
from tests.support.passkey_flow import PasskeyPages, csrf_meta

WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim


Ending = Callable[[], None]


def _ended_by_an_admin(app: Flask, user: CreatedUser, browser: FlaskClient) -> Ending:
    # The admin is made before the registration is held: making one registers its passkey.
    session = row_of(app, cookie_of(browser))
    admin = passkey_browser(app, "root@example.com")

    def end() -> None:
        ended = admin.post(f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid})
        assert ended.status_code < 400

    return end


def _signed_out_in_another_tab(app: Flask, user: CreatedUser, browser: FlaskClient) -> Ending:
    tab = browser_with(app, cookie_of(browser))
    page = tab.get("/account/recover")
    assert page.status_code == 200
    form = {"csrf_token": csrf_meta(page.text), "confirm": "yes"}

    def end() -> None:
        assert tab.post("/logout", data=form).status_code < 400

    return end


@pytest.mark.parametrize("ending", [_ended_by_an_admin, _signed_out_in_another_tab])
def test_a_passkey_added_as_its_restricted_session_ends_opens_no_full_session(
    storage_app: Flask,
    checkpoints: Checkpoints,
    ending: Callable[[Flask, CreatedUser, FlaskClient], Ending],
) -> None:
    """The registration accepted the restricted session (a login link's), then the session was
    ended, then the registration promoted it: the ending was overwritten and a full session
    opened in its place, under a new id no ending had seen (OWASP ASVS 3.3.1: logout
    invalidates the session). The promotion must find the session ended and open nothing; the
    passkey the ended session was adding is not kept either."""
    user = create_user(storage_app)
    browser = link_session(storage_app, user)
    pages = PasskeyPages(browser)
    options = pages.post_json("/account/passkeys/options", {}, page="/account/recover")
    assert options.status_code == 200, options.text
    ceremony = options.get_json()
    credential = SoftAuthenticator().create(ceremony["publicKey"])
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential}
    headers = {"X-CSRFToken": pages.csrf("/account/recover")}
    end = ending(storage_app, user, browser)
    outcome: dict[str, Any] = {}

    def register() -> None:
        try:
            outcome["answer"] = browser.post("/account/passkeys", json=body, headers=headers)
        except Exception as error:  # reported in the test's thread
            outcome["error"] = error

    with checkpoints.holding(REGISTER_CHECKPOINT):
        thread = threading.Thread(target=register)
        thread.start()
        wait_until(lambda: checkpoints.arrivals(REGISTER_CHECKPOINT) >= 1 or not thread.is_alive(),
                   "the registration reached its checkpoint")  # fmt: skip
        assert thread.is_alive(), outcome
        end()
    thread.join(WAIT_LIMIT)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome

    live = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id,
                BrowserSession.revoked_at.is_(None))  # fmt: skip
    assert live == [], [(s.sid, s.restricted) for s in live]
    assert outcome["answer"].status_code == 401, outcome["answer"].text
    assert outcome["answer"].get_json()["error"] == "login_required"
    assert rows(storage_app, Passkey, Passkey.user_id == user.id) == []
    assert path_of(browser.get("/account")).startswith("/login")
