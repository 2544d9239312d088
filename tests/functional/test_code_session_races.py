"""An authorization code racing the end of the session it is issued in (docs/security.md,
"Sessions"): real parallel requests on SQLite and PostgreSQL, the authorization request held where
its session was accepted (idp.oidc.views.ISSUE_CODE_CHECKPOINT) while an admin ends that session,
to its commit. Never a sleep: the test waits for arrivals and finished requests."""

from __future__ import annotations

import pytest
from flask import Flask

from idp.models import BrowserSession, Grant
from idp.oidc.views import ISSUE_CODE_CHECKPOINT
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, query_of, sign_in_address, start_session


@pytest.mark.parametrize("scope", ["openid profile", "openid profile offline_access"])
def test_a_code_racing_the_end_of_its_session_is_not_issued_in_it(
    storage_app: Flask, checkpoints: Checkpoints, scope: str
) -> None:
    """The browser's session was accepted by /authorize, then an admin ended it (its grants
    revoked, its clients told: Back-Channel Logout 1.0 2.7, RP-Initiated Logout 2), then the
    code's grant was opened in it: the client got a code, and tokens, carrying the ``sid`` of a
    session that had ended, which no logout token would ever name again. The code must see the
    ending, or the ending the code: here the browser is asked to sign in again, no grant of the
    ended session stands and no code is issued."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    start_session(rp.browser, user)
    [session] = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)

    def end_the_session() -> None:
        ended = admin.post(f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid})
        assert ended.status_code < 400

    answer = answered_while_held(
        checkpoints, ISSUE_CODE_CHECKPOINT, lambda: rp.authorize(scope=scope), end_the_session
    )
    location = answer.headers.get("Location", "")
    code = (
        query_of(location).get("code") if location.startswith(rp.registered.redirect_uri) else None
    )
    issued = rows(storage_app, Grant, Grant.sid == session.sid, Grant.revoked_at.is_(None))
    exchanged = rp.exchange(code) if code else None
    assert (code, issued, exchanged and exchanged.status_code) == (None, [], None)
    # The session is gone: the browser is asked to sign in, for this same request.
    assert sign_in_address(answer) is not None, (answer.status_code, location)
