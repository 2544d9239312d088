"""Pruning takes back the grants that never issued a token and never will (idp.services.retention
``take_back_unredeemed``): an authorization code never exchanged (RFC 6749 4.1.2: it expires), a
device approval the device never polled again (RFC 8628 3.2: its device code expires). Nothing
else ends those grants, and pruning keeps live grants, so they stayed live for ever, apps
connected to the account that got nothing. The real HTTP path on SQLite and PostgreSQL; the
prune as a node runs it, on the application's frozen clock."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from idp.clock import STAMPED_AHEAD_TOLERANCE, FrozenClock
from idp.composition import services
from idp.extensions import db
from idp.models import Grant
from idp.services.retention import UNREDEEMED, UNREDEEMED_GRANTS, prune
from tests.functional.test_device_flow import answer, device_for, error_of
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, start_session


def _pruned(app: Flask, clock: FrozenClock) -> dict[str, int]:
    with app.app_context():
        return prune(db.session(), services().retention(clock.now()))


def _live(app: Flask, user: CreatedUser) -> set[str]:
    return {g.id for g in rows(app, Grant, Grant.user_id == user.id, Grant.revoked_at.is_(None))}


def _reason(app: Flask, grant_id: str) -> str | None:
    [grant] = rows(app, Grant, Grant.id == grant_id)
    return grant.revoked_reason


def test_prune_takes_back_a_grant_whose_code_was_never_exchanged(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A code of an ``offline_access`` grant, never exchanged: once it expired (and the clocks'
    tolerance passed) the prune revokes its grant; the grants that issued something stay live,
    the offline one with its refresh token, the other whose only access token expired and went
    (its spent code marks it: a logout must still tell its client). The family that issued keeps
    its history: a replayed refresh token still revokes it. Revoked, the unredeemed grant is
    deleted once its code is gone and the revoked grants' wait is over: nothing is left."""
    settings = storage_app.extensions["idp"].settings
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    offline = rp.tokens_for(user, scope="openid offline_access")
    rp.tokens_for(user, scope="openid profile")
    issued = _live(storage_app, user)
    assert len(issued) == 2
    never = rp.obtain_code(user, scope="openid offline_access")["code"]
    [unredeemed] = _live(storage_app, user) - issued
    # Just expired: a slower clock's exchange could still spend it, so it waits.
    clock.advance(timedelta(seconds=settings.code_ttl + 1))
    assert _pruned(storage_app, clock)[UNREDEEMED_GRANTS] == 0
    assert _live(storage_app, user) == issued | {unredeemed}
    # Past the tolerance, and past the access tokens' lifetime (they are pruned).
    clock.advance(STAMPED_AHEAD_TOLERANCE + timedelta(seconds=settings.access_token_ttl))
    counts = _pruned(storage_app, clock)
    assert counts[UNREDEEMED_GRANTS] == 1
    assert counts["access_tokens"] == 2
    assert _live(storage_app, user) == issued
    assert _reason(storage_app, unredeemed) == UNREDEEMED
    # The next run finds the online grant without a token: its spent code keeps it.
    assert _pruned(storage_app, clock)[UNREDEEMED_GRANTS] == 0
    assert _live(storage_app, user) == issued
    late = rp.exchange(never)
    assert (late.status_code, late.get_json()["error"]) == (400, "invalid_grant")
    # The offline grant lives on, and its replay evidence with it (RFC 9700 4.14.2).
    first = rp.refresh(offline["refresh_token"])
    assert first.status_code == 200, first.text
    second = rp.refresh(first.get_json()["refresh_token"])
    assert second.status_code == 200, second.text
    assert rp.refresh(offline["refresh_token"]).status_code == 400
    assert rp.refresh(second.get_json()["refresh_token"]).status_code == 400
    # Nothing left behind: the revoked grant goes once its code and the wait are over.
    clock.advance(timedelta(seconds=settings.refresh_token_ttl) + timedelta(days=2))
    _pruned(storage_app, clock)
    assert rows(storage_app, Grant, Grant.id == unredeemed) == []


def test_prune_takes_back_a_grant_whose_device_never_polled_again(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Approved, then the device never polled again: once its device code expired (RFC 8628
    3.2 ``expires_in``, and the clocks' tolerance) the prune revokes the approval's grant; the
    grant of a device that polled and got its tokens stays, also once they expired and went. A
    late poll is ``expired_token``."""
    user = create_user(storage_app)
    device = device_for(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    polled = device.codes("openid profile")  # an access token only, which expires and goes
    assert answer(phone, polled["user_code"]).status_code == 200
    assert device.poll(polled["device_code"]).status_code == 200
    issued = _live(storage_app, user)
    never = device.codes()
    assert answer(phone, never["user_code"]).status_code == 200
    [unpolled] = _live(storage_app, user) - issued
    clock.advance(timedelta(seconds=never["expires_in"]) + STAMPED_AHEAD_TOLERANCE)
    clock.advance(timedelta(seconds=1))
    assert _pruned(storage_app, clock)[UNREDEEMED_GRANTS] == 1
    assert _live(storage_app, user) == issued
    assert _reason(storage_app, unpolled) == UNREDEEMED
    # The next run finds the polled device's grant without a token: its spent device code
    # keeps it (a logout must still tell its client).
    assert _pruned(storage_app, clock)[UNREDEEMED_GRANTS] == 0
    assert _live(storage_app, user) == issued
    assert error_of(device.poll(never["device_code"])) == "expired_token"
    assert _live(storage_app, user) == issued
