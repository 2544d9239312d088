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


def test_a_code_not_yet_exchanged_takes_its_offline_grant_with_it_when_its_session_ends(
    storage_app: Flask,
) -> None:
    """Signed out while a code of an ``offline_access`` grant was not yet exchanged: the ending
    expired the code (the client holds nothing offline until it redeems it, RP-Initiated Logout
    2) but kept its grant, since an offline grant outlives its session (OIDC Core 11). That
    grant held no token and never would: a live grant, an app connected to the account that got
    nothing. The ending takes it back with the code it expired, in its transaction; the offline
    grant whose code was exchanged before keeps its refresh token. The real HTTP path on SQLite
    and PostgreSQL: sign-in, codes, one exchange, logout, the other exchange, a refresh."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))

    def live() -> set[str]:
        return {g.id for g in rows(storage_app, Grant, Grant.user_id == user.id,
                                   Grant.revoked_at.is_(None))}  # fmt: skip

    tokens = rp.tokens_for(user, scope="openid offline_access")
    [exchanged] = live()
    pending = rp.obtain_code(user, scope="openid offline_access")["code"]
    [unexchanged] = live() - {exchanged}
    ended = rp.browser.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert ended.status_code == 200, ended.text
    assert live() == {exchanged}
    [taken_back] = rows(storage_app, Grant, Grant.id == unexchanged)
    assert taken_back.revoked_at is not None
    late = rp.exchange(pending)
    assert (late.status_code, late.get_json()["error"]) == (400, "invalid_grant")
    assert live() == {exchanged}
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
