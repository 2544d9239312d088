"""A spent refresh token or device code presented again, or spent and then refused, takes its
grant back (RFC 9700 4.14.2, RFC 6749 4.1.2 and 6, RFC 8628 3.5; idp.oidc.code_refusals): the
real HTTP path on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AuditEvent, Grant, RefreshToken, User
from idp.services.device import DEVICE_POLL_REFUSED
from idp.services.grants import REFRESH_TOKEN_REPLAY
from idp.services.spent_codes import REFUSED_REFRESH
from tests.functional.test_device_flow import answer, device_for, error_of
from tests.functional.test_logout import introspect
from tests.support.factories import CreatedUser, change, create_client, create_user, rows
from tests.support.flow import RelyingParty, start_session

SCOPE = "openid profile offline_access"


def _events(app: Flask, kind: str) -> list[AuditEvent]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))
        db.session.expunge_all()
        return found


def _grant(app: Flask, user: CreatedUser) -> Grant:
    [grant] = rows(app, Grant, Grant.user_id == user.id)
    return grant


def test_a_rotated_refresh_token_presented_again_revokes_the_grant_and_is_audited(
    storage_app: Flask,
) -> None:
    """RFC 9700 4.14.2: a refresh token already rotated, presented again once its successor was
    used (no retry of a lost answer), tells that two parties hold the family. The grant is
    revoked, and with it the active refresh token (refused at the token endpoint, inactive at
    introspection) and the access tokens issued from it (userinfo 401); the replay is audited
    ``token.refresh_replayed`` for the user and the client, as a device code's replay is."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    first = rp.tokens_for(user, scope=SCOPE)
    second = rp.refresh(first["refresh_token"]).get_json()
    third = rp.refresh(second["refresh_token"]).get_json()
    assert "refresh_token" in third, third
    replayed = rp.refresh(first["refresh_token"])
    assert (replayed.status_code, replayed.get_json()["error"]) == (400, "invalid_grant")
    grant = _grant(storage_app, user)
    assert (grant.revoked_at is not None, grant.revoked_reason) == (True, REFRESH_TOKEN_REPLAY)
    active = rp.refresh(third["refresh_token"])
    assert (active.status_code, active.get_json()["error"]) == (400, "invalid_grant")
    assert introspect(rp, third["refresh_token"]) == {"active": False}
    assert rp.userinfo(third["access_token"]).status_code == 401
    [event] = _events(storage_app, "token.refresh_replayed")
    assert (event.outcome, event.subject_id, event.client_id) == (
        "failure", user.id, rp.registered.client_id,
    )  # fmt: skip


def _expired(app: Flask, user: CreatedUser) -> None:
    """The refresh token expired: the spend spends it, then refuses it."""
    change(app, update(RefreshToken).values(expires_at=RefreshToken.issued_at))


def _disabled_and_missed(app: Flask, user: CreatedUser) -> None:
    """The user disabled, the disabling's own revocation having missed the grant (a refresh
    that read the grant just before it): the spend reads the disabling, then refuses."""
    change(app, update(User).where(User.id == user.id).values(disabled_at=User.created_at))


@pytest.mark.parametrize("scene", [_expired, _disabled_and_missed])
def test_a_refresh_refused_after_its_spend_takes_the_grant_back(
    storage_app: Flask, scene: Any
) -> None:
    """A refresh whose token the spend consumed and then refused (expired, its user disabled)
    issued no successor: the spent token can issue nothing more, and presented again it would
    be a replay. The grant stayed live with no refresh token, its access tokens answering; it
    is taken back in the spend's transaction (``refresh_refused``), and the access token the
    client still holds is refused."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    tokens = rp.tokens_for(user, scope=SCOPE)
    scene(storage_app, user)
    refused = rp.refresh(tokens["refresh_token"])
    assert (refused.status_code, refused.get_json()["error"]) == (400, "invalid_grant")
    grant = _grant(storage_app, user)
    assert (grant.revoked_at is not None, grant.revoked_reason) == (True, REFUSED_REFRESH)
    change(storage_app, update(User).values(disabled_at=None))
    assert rp.userinfo(tokens["access_token"]).status_code == 401


def test_a_device_code_replayed_or_refused_after_its_spend_takes_the_grant_back(
    storage_app: Flask,
) -> None:
    """RFC 8628 3.5, RFC 6749 4.1.2: a device code polled again after it issued tokens is a
    replay that revokes the grant (audited ``device.code_replayed``); one whose poll spent it and
    then refused it (its user disabled, the disabling's revocation having missed the grant)
    takes the grant back (``device_poll_refused``), which stayed live with no token."""
    user = create_user(storage_app)
    phone = storage_app.test_client()
    start_session(phone, user)
    device = device_for(storage_app)
    codes = device.codes()
    answer(phone, codes["user_code"])
    issued = device.poll(codes["device_code"])
    assert issued.status_code == 200, issued.text
    assert error_of(device.poll(codes["device_code"])) == "invalid_grant"
    [replayed] = rows(storage_app, Grant, Grant.user_id == user.id)
    assert replayed.revoked_at is not None
    assert len(_events(storage_app, "device.code_replayed")) == 1
    codes = device.codes()
    answer(phone, codes["user_code"])
    _disabled_and_missed(storage_app, user)
    assert error_of(device.poll(codes["device_code"])) == "invalid_grant"
    [refused] = rows(storage_app, Grant, Grant.user_id == user.id, Grant.id != replayed.id)
    assert (refused.revoked_at is not None, refused.revoked_reason) == (True, DEVICE_POLL_REFUSED)
