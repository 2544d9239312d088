"""An authorization code racing the end of the session it is issued in (docs/security.md,
"Sessions"): real parallel requests on SQLite and PostgreSQL, the authorization request held where
its session was accepted (idp.oidc.views.ISSUE_CODE_CHECKPOINT) while an admin ends that session,
to its commit; and its exchange racing that end, the exchange held once it read its clock
(idp.oidc.rotation.SPEND_CODE_CHECKPOINT) and the ending once it expired the code, its row locked
(idp.services.grants.END_CODES_CHECKPOINT). Never a sleep: the test waits for arrivals, a waiting
lock and finished requests."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from idp.models import AccessToken, BrowserSession, Grant
from idp.oidc.rotation import SPEND_CODE_CHECKPOINT, SPENT_CODE_CHECKPOINT
from idp.oidc.views import ISSUE_CODE_CHECKPOINT
from idp.services.grants import END_CODES_CHECKPOINT
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.checkpoints import (
    WAIT_TIMEOUT,
    Checkpoints,
    answered_while_held,
    in_thread,
    wait_until,
)
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, query_of, sign_in_address, start_session
from tests.support.writers import waits_for_a_lock


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


@pytest.mark.parametrize("scope", ["openid offline_access", "openid profile"])
def test_an_exchange_that_read_its_clock_before_the_session_ended_spends_no_expired_code(
    storage_app: Flask, checkpoints: Checkpoints, scope: str
) -> None:
    """An exchange read its clock, then the session ended: the ending expired the unexchanged
    code and revoked its grant, its rows locked until it commits, and the exchange's spend
    waited on the code's lock. Once the ending committed, the spend found the code unspent, and
    its expiry (set to the ending's time) still ahead of the exchange's earlier clock: it issued
    tokens on the grant the ending had just revoked. The ending expires the code as of its
    issue, which no exchange's clock precedes, so the exchange is refused (RFC 6749 5.2
    ``invalid_grant``) and nothing was issued. Without ``offline_access`` the ending left the
    code as it was and revoked only its grant: on PostgreSQL the spend, which nothing locked,
    read the grant live before the ending committed and issued tokens on it (real parallel
    requests on SQLite and PostgreSQL, each held at a checkpoint; the exchange seen waiting on
    the lock)."""
    admin, user, rp, code, session = _code_in_a_session(storage_app, scope)
    outcome: dict[str, Any] = {}
    with checkpoints.holding(END_CODES_CHECKPOINT):
        with checkpoints.holding(SPEND_CODE_CHECKPOINT):
            exchange = in_thread(outcome, "exchange", lambda: rp.exchange(code))
            wait_until(lambda: checkpoints.arrivals(SPEND_CODE_CHECKPOINT) == 1,
                       "the exchange read its clock, before its spend")  # fmt: skip
            ending = in_thread(outcome, "ending", lambda: admin.post(
                f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid}))  # fmt: skip
            wait_until(lambda: checkpoints.arrivals(END_CODES_CHECKPOINT) == 1,
                       "the ending expired the code, its row locked")  # fmt: skip
        wait_until(lambda: waits_for_a_lock(storage_app, exchange) or not exchange.is_alive(),
                   "the exchange's spend waits on the ending's lock")  # fmt: skip
        assert exchange.is_alive(), outcome
    for thread in (exchange, ending):
        thread.join(WAIT_TIMEOUT)
    assert sorted(outcome) == ["ending", "exchange"], outcome
    assert outcome["ending"].status_code < 400
    refused = outcome["exchange"]
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_grant")
    assert rows(storage_app, AccessToken, AccessToken.user_id == user.id) == []
    assert rows(storage_app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None)) == []


@pytest.mark.parametrize("scope", ["openid offline_access", "openid profile"])
def test_an_exchange_that_spent_its_code_before_the_session_ended_keeps_no_live_access_token(
    storage_app: Flask, checkpoints: Checkpoints, scope: str
) -> None:
    """An exchange spent its code, then the session ended before the exchange recorded its
    tokens: the ending revoked the grant's access tokens (there were none yet) and then waited
    on the code's row lock, and the exchange committed an access token that nothing revoked, of
    an ``offline_access`` grant that outlives its session. The ending expires the codes first
    and revokes grants and access tokens after, so it waits for the exchange's commit and then
    revokes what it issued: the exchange, first, gets its tokens, the access token is refused
    once the ending committed, and an offline grant's refresh token still works (OIDC Core 11;
    real parallel requests on SQLite and PostgreSQL, the exchange held after its spend, the
    ending seen waiting on its lock)."""
    admin, user, rp, code, session = _code_in_a_session(storage_app, scope)
    outcome: dict[str, Any] = {}
    with checkpoints.holding(SPENT_CODE_CHECKPOINT):
        exchange = in_thread(outcome, "exchange", lambda: rp.exchange(code))
        spent = lambda: checkpoints.arrivals(SPENT_CODE_CHECKPOINT) == 1  # noqa: E731
        wait_until(lambda: spent() or not exchange.is_alive(),
                   "the exchange spent its code, its row locked")  # fmt: skip
        assert exchange.is_alive(), outcome
        ending = in_thread(outcome, "ending", lambda: admin.post(
            f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid}))  # fmt: skip
        wait_until(lambda: waits_for_a_lock(storage_app, ending) or not ending.is_alive(),
                   "the ending waits on the exchange's lock")  # fmt: skip
        assert ending.is_alive(), outcome
    for thread in (exchange, ending):
        thread.join(WAIT_TIMEOUT)
    assert sorted(outcome) == ["ending", "exchange"], outcome
    assert outcome["ending"].status_code < 400
    tokens = outcome["exchange"].get_json()
    assert outcome["exchange"].status_code == 200, tokens
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    if "offline_access" in scope:
        [issued] = rows(storage_app, AccessToken, AccessToken.user_id == user.id)
        assert issued.revoked_at is not None
        assert rp.refresh(tokens["refresh_token"]).status_code == 200
    else:
        assert rows(storage_app, Grant, Grant.user_id == user.id,
                    Grant.revoked_at.is_(None)) == []  # fmt: skip


def _code_in_a_session(
    app: Flask, scope: str
) -> tuple[ConsoleBrowser, CreatedUser, RelyingParty, str, BrowserSession]:
    """An admin's console, a user signed in at a relying party that holds a code of ``scope``
    not yet exchanged, and the browser session that issued it."""
    admin = passkey_browser(app, "root@example.com")
    user = create_user(app)
    rp = RelyingParty(app.test_client(), create_client(app))
    code = rp.obtain_code(user, scope=scope)["code"]
    [session] = rows(app, BrowserSession, BrowserSession.user_id == user.id)
    return admin, user, rp, code, session
