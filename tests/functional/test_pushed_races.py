"""A request_uri (RFC 9126 4) brought to /authorize by two parallel requests: real parallel
requests on SQLite and PostgreSQL, the first held after its spend and before its commit
(idp.oidc.pushed.SPEND_CHECKPOINT) while the second arrives. Never a sleep: the test waits for
arrivals, a waiting lock or a finished request."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.models import BrowserSession, Grant, PendingAuthorization
from idp.oidc.pushed import SPEND_CHECKPOINT
from idp.oidc.views import ISSUE_CODE_CHECKPOINT
from tests.functional.test_pushed_authorization import authorize_pushed, pushed_uri
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, answered_while_held, in_thread, wait_until
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, start_session
from tests.support.writers import waits_for_a_lock

WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim


def test_parallel_authorize_requests_with_one_request_uri_spend_it_once(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """RFC 9126 4: a request_uri is used once (docs/architecture.md, "Every secret is spent
    once"). Two browsers bring it at the same moment: the second waits for the first's spend
    to commit (a row lock on PostgreSQL, SQLite's write lock) and then finds it spent; exactly
    one goes on to sign in, one pending request is stored, the other gets the error page."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    request_uri = pushed_uri(rp)
    query = {"client_id": rp.registered.client_id, "request_uri": request_uri}
    outcome: dict[str, Any] = {}

    def authorize() -> Any:
        return storage_app.test_client().get("/authorize", query_string=query)

    with checkpoints.holding(SPEND_CHECKPOINT):
        first = in_thread(outcome, "first", authorize)
        wait_until(lambda: checkpoints.arrivals(SPEND_CHECKPOINT) >= 1 or not first.is_alive(),
                   "the first request spent the request_uri")  # fmt: skip
        assert first.is_alive(), outcome
        second = in_thread(outcome, "second", authorize)
        wait_until(
            lambda: (
                not second.is_alive()
                or checkpoints.arrivals(SPEND_CHECKPOINT) >= 2
                or waits_for_a_lock(storage_app, second)
            ),
            "the second request finished, spent too, or waits for the first's lock",
        )
    for thread in (first, second):
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    assert "first error" not in outcome, outcome
    assert "second error" not in outcome, outcome

    answers = [outcome["first"], outcome["second"]]
    signing_in = [a for a in answers if a.status_code == 302
                  and a.headers["Location"].startswith("/login?request=")]  # fmt: skip
    refused = [a for a in answers if a.status_code == 400]
    assert len(signing_in) == 1, [(a.status_code, a.headers.get("Location")) for a in answers]
    assert len(refused) == 1
    assert "Location" not in refused[0].headers
    assert len(rows(storage_app, PendingAuthorization)) == 1


def test_a_pushed_request_whose_session_ends_on_its_way_signs_in_at_login(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A pushed request of a signed-in browser, its session ended by an admin while the code was
    about to be issued (idp.oidc.views.ISSUE_CODE_CHECKPOINT): no code, as for any request
    (Back-Channel Logout 1.0 2.7), and the sign-in it goes on to is /login?request=<id>, never
    a page at /authorize's address, whose reload would bring the spent request_uri again."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    start_session(rp.browser, user)
    [session] = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)
    request_uri = pushed_uri(rp)

    def end_the_session() -> None:
        ended = admin.post(f"/admin/users/{user.id}/sessions/revoke", {"sid": session.sid})
        assert ended.status_code < 400

    answer = answered_while_held(
        checkpoints, ISSUE_CODE_CHECKPOINT, lambda: authorize_pushed(rp, request_uri),
        end_the_session,
    )  # fmt: skip
    assert answer.status_code == 302, answer.text[:300]
    assert answer.headers["Location"].startswith("/login?request="), answer.headers["Location"]
    assert rows(storage_app, Grant, Grant.sid == session.sid, Grant.revoked_at.is_(None)) == []
    assert rp.browser.get(answer.headers["Location"]).status_code == 200
