"""A device approval racing the end of the session that approves it (docs/security.md, "Device
authorization grant"): real parallel requests on SQLite and PostgreSQL, the approval held where its
session was accepted (idp.services.device.DECIDE_CHECKPOINT) while an admin ends that session, to
its commit. Never a sleep: the test waits for arrivals and finished requests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.clock import FrozenClock
from idp.models import AccessToken, BrowserSession, DeviceAuthorization, Grant
from idp.services.device import DECIDE_CHECKPOINT, POLL_CHECKPOINT
from tests.functional.test_device_flow import (
    Device,
    answer,
    device_for,
    enter_code,
    error_of,
)
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.checkpoints import (
    WAIT_TIMEOUT,
    Checkpoints,
    answered_while_held,
    in_thread,
    wait_until,
)
from tests.support.factories import CreatedUser, create_user, rows
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


#: With and without ``offline_access``: an offline grant outlives its session
#: (idp.services.grants.GrantService.end_session_grants), an approval not yet polled does not.
SCOPES = ["openid profile", "openid profile offline_access"]


def _sign_out(phone: FlaskClient) -> None:
    page = phone.get("/account")
    ended = phone.post("/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"})
    assert ended.status_code == 200, ended.text


@pytest.mark.parametrize("scope", SCOPES)
def test_a_device_approval_whose_session_ended_before_the_poll_gets_no_tokens(
    app: Flask, user: CreatedUser, scope: str
) -> None:
    """The user approved on the phone, then signed out there before the device polled: the
    session's logout token was queued for the device's client (Back-Channel Logout 1.0 2.7), and
    an ID token issued after it would name that ended ``sid``, a relying-party session no
    logout ever ends (as a code not yet exchanged, idp expires the approval). With
    ``offline_access`` the device got every token. It is told ``expired_token`` (RFC 8628 3.5)
    and starts again; approved in a live session, it is signed in."""
    device = device_for(app)
    phone = app.test_client()
    start_session(phone, user)
    codes = device.codes(scope)
    assert answer(phone, codes["user_code"]).status_code == 200
    _sign_out(phone)
    assert error_of(device.poll(codes["device_code"])) == "expired_token"
    assert rows(app, AccessToken, AccessToken.user_id == user.id) == []
    # Started again and approved in a live session, the device is signed in.
    start_session(phone, user)
    again = device.codes(scope)
    assert answer(phone, again["user_code"]).status_code == 200
    assert device.poll(again["device_code"]).status_code == 200


def _live_grants(app: Flask, user: CreatedUser) -> list[Grant]:
    return rows(app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None))


@pytest.mark.parametrize("scope", SCOPES)
def test_a_device_approval_whose_session_ended_leaves_no_live_grant(
    storage_app: Flask, scope: str
) -> None:
    """Approved, then the approving session ended before the device polled: the poll issues
    nothing (above), and the grant the approval opened must not stay behind either. With
    ``offline_access`` the ending kept it (an offline grant outlives its session for its refresh
    token), a live grant that held no token and never would: an app connected to the account
    that the user never got. The ending takes it back with the approval it expired, so nothing
    is left whether or not the device polls again (RFC 8628 3.5: it starts again). The real HTTP
    path on SQLite and PostgreSQL: device authorization, approval, sign-out, poll."""
    user = create_user(storage_app)
    device = device_for(storage_app, first_party=False)
    phone = storage_app.test_client()
    start_session(phone, user)
    codes = device.codes(scope)
    assert answer(phone, codes["user_code"]).status_code == 200
    assert len(_live_grants(storage_app, user)) == 1
    _sign_out(phone)
    assert _live_grants(storage_app, user) == []
    assert error_of(device.poll(codes["device_code"])) == "expired_token"
    assert _live_grants(storage_app, user) == []
    assert rows(storage_app, AccessToken, AccessToken.user_id == user.id) == []


def test_a_device_approval_expired_unpolled_takes_its_grant_back_at_the_poll(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Approved with ``offline_access``, then the device code expired before the device polled
    (RFC 8628 3.2 ``expires_in``): the poll answers ``expired_token`` and the grant the approval
    opened, which can never be redeemed now, is revoked in the poll's transaction instead of
    staying live without a token (SQLite and PostgreSQL, the real HTTP path)."""
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    codes = device.codes(SCOPES[1])
    assert answer(phone, codes["user_code"]).status_code == 200
    assert len(_live_grants(storage_app, user)) == 1
    clock.advance(timedelta(seconds=codes["expires_in"]))
    assert error_of(device.poll(codes["device_code"])) == "expired_token"
    [grant] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert grant.revoked_at is not None
    assert grant.revoked_reason == "device_approval_expired"
    # The session lives on: only the approval that can never be redeemed ended.
    assert rows(storage_app, BrowserSession, BrowserSession.user_id == user.id,
                BrowserSession.revoked_at.is_(None)) != []  # fmt: skip


def _end_session(admin: ConsoleBrowser, user_id: str, sid: str) -> Callable[[], None]:
    def end() -> None:
        ended = admin.post(f"/admin/users/{user_id}/sessions/revoke", {"sid": sid})
        assert ended.status_code < 400

    return end


def _disconnect(phone: FlaskClient, client_id: str) -> Callable[[], None]:
    def disconnect() -> None:
        page = phone.get(f"/account/apps/{client_id}/revoke")  # the confirmation page
        form = {"csrf_token": csrf_token(page.text), "confirm": "yes"}
        done = phone.post(f"/account/apps/{client_id}/revoke", data=form)
        assert done.status_code == 302, done.text

    return disconnect


@pytest.mark.parametrize(
    ("ending", "scope", "answered"),
    [
        ("session", SCOPES[0], "expired_token"),
        ("session", SCOPES[1], "expired_token"),
        ("disconnect", SCOPES[1], "invalid_grant"),
    ],
)
def test_a_device_poll_racing_the_end_of_its_approval_gets_no_tokens(
    storage_app: Flask, checkpoints: Checkpoints, ending: str, scope: str, answered: str
) -> None:
    """The device's poll read its approved request, then the approving session ended (an admin
    ended it) or the user disconnected the app, then the poll spent the device code: it issued
    tokens from the row and grant as it had read them, an ID token naming the ended session or
    tokens of a revoked grant. The spend requires the row unexpired and the grant is read again
    once the row is spent, so the poll sees the ending (on SQLite and PostgreSQL, real parallel
    requests, the poll held at its checkpoint while the ending commits)."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    [session] = rows(storage_app, BrowserSession, BrowserSession.user_id == user.id)
    codes = device.codes(scope)
    assert answer(phone, codes["user_code"]).status_code == 200
    meanwhile = (
        _end_session(admin, user.id, session.sid)
        if ending == "session"
        else _disconnect(phone, device.registered.client_id)
    )
    poll = answered_while_held(
        checkpoints, POLL_CHECKPOINT, lambda: device.poll(codes["device_code"]), meanwhile
    )
    assert error_of(poll) == answered
    assert rows(storage_app, AccessToken, AccessToken.user_id == user.id) == []
    assert _live_grants(storage_app, user) == []


def test_of_two_answers_sent_at_once_only_one_counts(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Two tabs showed the review page; Approve in one and Deny in the other are both held where
    their session was accepted, each having read the request as unanswered, and let go together:
    the user code is spent by one conditional UPDATE (the consume-once primitive, RFC 8628 3.3),
    so exactly one answer counts, the other is told the request was already answered, and the
    device gets what the one that counted decided (real parallel requests on SQLite and
    PostgreSQL)."""
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    codes = device.codes("openid profile")
    review = enter_code(phone, codes["user_code"])
    authorization = review.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
    form = {"csrf_token": csrf_token(review.text), "authorization": authorization}
    outcome: dict[str, Any] = {}
    with checkpoints.holding(DECIDE_CHECKPOINT):
        threads = [
            in_thread(outcome, decision,
                      lambda d=decision: phone.post("/device/decide", data={**form, "decision": d}))
            for decision in ("approve", "deny")
        ]  # fmt: skip
        wait_until(lambda: checkpoints.arrivals(DECIDE_CHECKPOINT) == 2,
                   "both answers held where their session was accepted")  # fmt: skip
    for thread in threads:
        thread.join(WAIT_TIMEOUT)
    assert sorted(outcome) == ["approve", "deny"], outcome
    statuses = {decision: outcome[decision].status_code for decision in ("approve", "deny")}
    assert sorted(statuses.values()) == [200, 400], statuses
    [lost] = [outcome[d] for d, status in statuses.items() if status == 400]
    assert "already answered" in lost.text
    grants = rows(storage_app, Grant, Grant.user_id == user.id)
    poll = device.poll(codes["device_code"])
    if statuses["approve"] == 200:
        assert len(grants) == 1
        assert poll.status_code == 200, poll.text
    else:
        assert grants == []
        assert error_of(poll) == "access_denied"


def _polls_let_go_together(
    checkpoints: Checkpoints, device: Device, device_code: str, count: int
) -> list[str]:
    """``count`` polls of ``device_code``, each held where it read its request until all have,
    then let go together; the ``error`` of each answer, sorted."""
    outcome: dict[str, Any] = {}
    with checkpoints.holding(POLL_CHECKPOINT):
        threads = [
            in_thread(outcome, f"poll {n}", lambda: device.poll(device_code)) for n in range(count)
        ]
        wait_until(lambda: checkpoints.arrivals(POLL_CHECKPOINT) == count,
                   f"{count} polls held where they read their request")  # fmt: skip
    for thread in threads:
        thread.join(WAIT_TIMEOUT)
    assert sorted(outcome) == [f"poll {n}" for n in range(count)], outcome
    return sorted(error_of(answer) for answer in outcome.values())


def test_parallel_polls_are_paced_and_every_slow_down_is_remembered(
    storage_app: Flask, checkpoints: Checkpoints, clock: FrozenClock
) -> None:
    """RFC 8628 3.5: a poll sooner than ``interval`` after the previous one is ``slow_down``, and
    the interval grows by 5 seconds for it and every later poll. Decided on the row as each poll
    read it, two polls sent at once (a device polling from two threads) were both
    ``authorization_pending``, and three too soon at once each added 5 seconds onto the same
    value read, 5 seconds in all: a device polling in parallel was never slowed down. On SQLite
    and PostgreSQL, real parallel polls held where they read the request (the clock frozen: each
    poll is at the same instant)."""
    device = device_for(storage_app)
    codes = device.codes("openid profile")

    def interval() -> int:
        [row] = rows(storage_app, DeviceAuthorization)
        return int(row.interval)

    first = interval()
    assert _polls_let_go_together(checkpoints, device, codes["device_code"], 2) == [
        "authorization_pending",
        "slow_down",
    ]
    assert interval() == first + 5
    assert _polls_let_go_together(checkpoints, device, codes["device_code"], 3) == ["slow_down"] * 3
    assert interval() == first + 5 + 3 * 5
    # Waiting the interval now asked, the device is pending again.
    clock.advance(timedelta(seconds=first + 20))
    assert error_of(device.poll(codes["device_code"])) == "authorization_pending"
