"""A refresh whose answer is lost can be retried (docs/security.md, "Faults and degraded
dependencies"; RFC 9700 4.14.2 reasoning in idp.services.grants).

The rotation is committed, the answer is cut by the client's read timeout (held in flight by the
test, tests/support/held.py), and the client retries with the token it has. Within
``refresh_token_retry_grace`` and while the successor is unused, the retry gets a fresh successor
and the user stays signed in; outside the window, or once the successor was used, the replay rule
revokes the grant as before. Over real HTTP, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from sqlalchemy import update

from idp.clock import STAMPED_AHEAD_TOLERANCE
from idp.models import AuditEvent, Grant, RefreshToken
from idp.models.base import utcnow
from idp.services.crypto import token_hash
from tests.support.apps import app_on
from tests.support.clock import FrozenClock
from tests.support.factories import (
    CreatedUser,
    RegisteredClient,
    change,
    create_client,
    create_user,
    rows,
)
from tests.support.flow import RelyingParty
from tests.support.held import ServedApp, serve_with_held_answers

#: The client gives up long before a held answer could come: the answer is always lost.
CUT_READ_TIMEOUT = 0.5
TIMEOUT = 30


@pytest.fixture
def served(storage_app: Flask) -> Iterator[ServedApp]:
    with serve_with_held_answers(storage_app, "/token") as served_app:
        yield served_app


@pytest.fixture
def user(storage_app: Flask) -> CreatedUser:
    return create_user(storage_app)


@pytest.fixture
def registered(storage_app: Flask) -> RegisteredClient:
    return create_client(storage_app)


def signed_in(app: Flask, registered: RegisteredClient, user: CreatedUser) -> dict[str, Any]:
    """Tokens of a code flow (the test client; the refreshes go over HTTP)."""
    return RelyingParty(app.test_client(), registered).tokens_for(user)


def refresh(
    url: str, registered: RegisteredClient, refresh_token: str, timeout: Any = TIMEOUT
) -> requests.Response:
    assert registered.client_secret is not None
    return requests.post(url + "/token",
                         data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                         auth=(registered.client_id, registered.client_secret),
                         timeout=timeout)  # fmt: skip


def userinfo(url: str, access_token: str) -> int:
    return requests.get(url + "/userinfo", headers={"Authorization": f"Bearer {access_token}"},
                        timeout=TIMEOUT).status_code  # fmt: skip


def refresh_with_lost_answer(
    served: ServedApp, registered: RegisteredClient, refresh_token: str
) -> dict[str, Any]:
    """Refresh with a read timeout shorter than the held answer: the client sees a timeout;
    returns what the server answered (and committed) but the client never received."""
    served.held.hold_next()
    with pytest.raises(requests.ReadTimeout):
        refresh(served.url, registered, refresh_token, timeout=(10, CUT_READ_TIMEOUT))
    assert served.held.produced.wait(TIMEOUT), "the held refresh never finished on the server"
    served.held.released.set()
    lost: dict[str, Any] = json.loads(served.held.body)
    assert "refresh_token" in lost, lost  # the rotation happened: the answer had a successor
    return lost


def grant_revoked(app: Flask, refresh_token: str) -> str | None:
    (row,) = rows(app, RefreshToken, RefreshToken.token_hash == token_hash(refresh_token))
    (grant,) = rows(app, Grant, Grant.id == row.grant_id)
    reason: str | None = grant.revoked_reason
    return reason


def test_a_refresh_retried_after_its_answer_was_cut_keeps_the_user_signed_in(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    tokens = signed_in(storage_app, registered, user)
    lost = refresh_with_lost_answer(served, registered, tokens["refresh_token"])

    retry = refresh(served.url, registered, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text
    renewed = retry.json()
    assert renewed["refresh_token"] not in (lost["refresh_token"], tokens["refresh_token"])

    # Still signed in: the grant stands, the tokens from before and after the retry answer.
    assert grant_revoked(storage_app, tokens["refresh_token"]) is None
    assert userinfo(served.url, tokens["access_token"]) == 200
    assert userinfo(served.url, renewed["access_token"]) == 200
    again = refresh(served.url, registered, renewed["refresh_token"])
    assert again.status_code == 200, again.text
    assert userinfo(served.url, again.json()["access_token"]) == 200

    # Audited as a retry, for this user and client.
    events = rows(storage_app, AuditEvent, AuditEvent.kind == "token.refresh_retried")
    assert [(e.subject_id, e.client_id) for e in events] == [(user.id, registered.client_id)]


def test_the_successor_a_retry_superseded_is_refused_and_counts_as_a_replay(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    """The unused successor is revoked: if someone holds the lost answer after all, presenting
    it is a replay of an invalidated token (RFC 9700 4.14.2), and the family is revoked."""
    tokens = signed_in(storage_app, registered, user)
    lost = refresh_with_lost_answer(served, registered, tokens["refresh_token"])
    retry = refresh(served.url, registered, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text

    stale = refresh(served.url, registered, lost["refresh_token"])
    assert stale.status_code == 400
    assert stale.json()["error"] == "invalid_grant"
    assert grant_revoked(storage_app, tokens["refresh_token"]) == "refresh_token_replay"
    assert userinfo(served.url, retry.json()["access_token"]) == 401


def test_a_retry_outside_the_grace_window_is_a_replay_and_revokes_the_grant(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    tokens = signed_in(storage_app, registered, user)
    refresh_with_lost_answer(served, registered, tokens["refresh_token"])
    # The rotation happened one second more than the window ago.
    grace = storage_app.extensions["idp"].settings.refresh_token_retry_grace
    assert grace > 0
    change(storage_app, update(RefreshToken)
           .where(RefreshToken.token_hash == token_hash(tokens["refresh_token"]))
           .values(consumed_at=utcnow() - timedelta(seconds=grace + 1)))  # fmt: skip

    late = refresh(served.url, registered, tokens["refresh_token"])
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"
    assert grant_revoked(storage_app, tokens["refresh_token"]) == "refresh_token_replay"
    assert userinfo(served.url, tokens["access_token"]) == 401
    assert not rows(storage_app, AuditEvent, AuditEvent.kind == "token.refresh_retried")


def test_the_old_token_after_its_successor_was_used_is_a_replay_even_within_the_window(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    tokens = signed_in(storage_app, registered, user)
    lost = refresh_with_lost_answer(served, registered, tokens["refresh_token"])
    # The answer reached someone after all, who used the successor.
    used = refresh(served.url, registered, lost["refresh_token"])
    assert used.status_code == 200, used.text

    old = refresh(served.url, registered, tokens["refresh_token"])
    assert old.status_code == 400
    assert old.json()["error"] == "invalid_grant"
    assert grant_revoked(storage_app, tokens["refresh_token"]) == "refresh_token_replay"
    assert userinfo(served.url, used.json()["access_token"]) == 401
    assert refresh(served.url, registered, used.json()["refresh_token"]).status_code == 400


def test_parallel_retries_never_leave_two_live_successors(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    """Retries sent at once each supersede the unused successor in one conditional UPDATE:
    serialised (SQLite), each supersedes the one before; racing for the same successor
    (PostgreSQL), the losers find none unused, which is the replay rule's case. Either way the
    family never has two live refresh tokens."""
    tokens = signed_in(storage_app, registered, user)
    refresh_with_lost_answer(served, registered, tokens["refresh_token"])

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: refresh(served.url, registered,
                                                  tokens["refresh_token"]), range(6)))  # fmt: skip
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code != 200)
    granted = {token_hash(a.json()["refresh_token"]) for a in answers if a.status_code == 200}
    assert granted, [a.status_code for a in answers]
    (spent,) = rows(storage_app, RefreshToken,
                       RefreshToken.token_hash == token_hash(tokens["refresh_token"]))  # fmt: skip
    unspent = rows(storage_app, RefreshToken, RefreshToken.grant_id == spent.grant_id,
                      RefreshToken.consumed_at.is_(None))  # fmt: skip
    assert len(unspent) <= 1
    if grant_revoked(storage_app, tokens["refresh_token"]) is None:
        # Not revoked: the one live token is the last retry's answer, and it works.
        assert len(unspent) == 1
        assert unspent[0].token_hash in granted


def test_a_zero_grace_window_makes_every_second_presentation_a_replay(tmp_path: Path) -> None:
    with app_on("sqlite", tmp_path, refresh_token_retry_grace=0) as app:
        registered = create_client(app)
        tokens = signed_in(app, registered, create_user(app))
        with serve_with_held_answers(app, "/token") as served:
            refresh_with_lost_answer(served, registered, tokens["refresh_token"])
            retry = refresh(served.url, registered, tokens["refresh_token"])
            assert retry.status_code == 400
            assert grant_revoked(app, tokens["refresh_token"]) == "refresh_token_replay"


def test_another_client_cannot_retry_a_clients_refresh_token(
    storage_app: Flask, served: ServedApp, registered: RegisteredClient, user: CreatedUser
) -> None:
    tokens = signed_in(storage_app, registered, user)
    refresh_with_lost_answer(served, registered, tokens["refresh_token"])
    other = create_client(storage_app, name="Another RP")
    stranger = refresh(served.url, other, tokens["refresh_token"])
    assert stranger.status_code == 400
    assert stranger.json()["error"] == "invalid_grant"
    # The real client's retry still works: the stranger superseded nothing.
    retry = refresh(served.url, registered, tokens["refresh_token"])
    assert retry.status_code == 200, retry.text


def test_a_clock_stepped_back_after_the_rotation_does_not_reopen_the_window(
    storage_app: Flask, clock: FrozenClock, registered: RegisteredClient, user: CreatedUser
) -> None:
    """The window is bounded both ways: a rotation stamped more than STAMPED_AHEAD_TOLERANCE in
    this request's future (the clock stepped back since, or the node that rotated runs minutes
    ahead) is of an unknown age, so its token presented again is a replay, however long the step.
    A rotation stamped less ahead (a retry that read its clock, then waited for the rotation's
    lock; two nodes a little apart) is still a retry."""
    rp = RelyingParty(storage_app.test_client(), registered)
    near = rp.tokens_for(user)
    assert rp.refresh(near["refresh_token"]).status_code == 200  # the answer "lost"
    clock.advance(-STAMPED_AHEAD_TOLERANCE)
    assert rp.refresh(near["refresh_token"]).status_code == 200, "a retry"
    assert grant_revoked(storage_app, near["refresh_token"]) is None

    far = rp.tokens_for(user)
    assert rp.refresh(far["refresh_token"]).status_code == 200  # the answer "lost"
    clock.advance(-STAMPED_AHEAD_TOLERANCE - timedelta(seconds=1))  # an NTP step back
    stepped_back = rp.refresh(far["refresh_token"])
    assert stepped_back.status_code == 400
    assert stepped_back.get_json()["error"] == "invalid_grant"
    assert grant_revoked(storage_app, far["refresh_token"]) == "refresh_token_replay"
    retried = rows(storage_app, AuditEvent, AuditEvent.kind == "token.refresh_retried")
    assert len(retried) == 1  # the near one only
