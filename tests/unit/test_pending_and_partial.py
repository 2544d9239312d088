"""Pending authorization requests and partial sign-ins, without Flask
(idp.services.pending_authorizations, idp.services.partial_logins)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from idp.models import Base, Client, Consent, User
from idp.services.partial_logins import PARTIAL_LOGIN_TTL, PartialLogins
from idp.services.pending_authorizations import PendingAuthorizations

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db() -> Iterator[Session]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(id="u1", email="ada@example.com"))
        session.add(Client(client_id="app", name="App", token_endpoint_auth_method="none"))
        session.flush()
        yield session
    engine.dispose()


def test_a_pending_request_lives_until_it_expires(db: Session) -> None:
    pending = PendingAuthorizations(db)
    pending_id = pending.open("app", {"scope": "openid"}, NOW, ttl=60)
    db.flush()
    row = pending.live(pending_id, NOW + timedelta(seconds=59))
    assert row is not None
    assert row.params == {"scope": "openid"}
    assert pending.live(pending_id, NOW + timedelta(seconds=60)) is None
    assert pending.live("unknown", NOW) is None


def test_a_pending_request_is_spent_once(db: Session) -> None:
    pending = PendingAuthorizations(db)
    pending_id = pending.open("app", {}, NOW, ttl=60)
    db.flush()
    row = pending.live(pending_id, NOW)
    assert row is not None
    assert pending.spend(row, NOW)
    assert not pending.spend(row, NOW)
    db.expire_all()
    assert pending.live(pending_id, NOW) is None


def test_the_sign_in_pages_read_a_live_request_with_its_client(db: Session) -> None:
    """``live_request``: the same rules as ``live`` (expired, spent and unknown requests are
    None), the client's registration read by the same statement, and spent once through it."""
    pending = PendingAuthorizations(db)
    pending_id = pending.open("app", {"scope": "openid"}, NOW, ttl=60)
    row = pending.live_request(pending_id, NOW + timedelta(seconds=59))
    assert row is not None
    assert (row.id, row.client_id, row.params) == (pending_id, "app", {"scope": "openid"})
    assert row.client.name == "App"
    assert row.client.client_id == "app"
    assert pending.live_request(pending_id, NOW + timedelta(seconds=60)) is None
    assert pending.live_request("unknown", NOW) is None
    assert pending.spend(row, NOW)
    assert not pending.spend(row, NOW)
    assert pending.live_request(pending_id, NOW) is None


def test_consent_given_binds_the_request_to_the_user(db: Session) -> None:
    pending = PendingAuthorizations(db)
    row = pending.live(pending.open("app", {}, NOW, ttl=60), NOW)
    assert row is not None
    pending.consent_given(row, "u1")
    assert row.consented_by == "u1"


def test_consented_scopes_are_none_until_the_user_was_asked(db: Session) -> None:
    pending = PendingAuthorizations(db)
    assert pending.consented_scopes("u1", "app") is None
    db.add(Consent(user_id="u1", client_id="app", scopes=["openid", "email"]))
    db.flush()
    assert pending.consented_scopes("u1", "app") == {"openid", "email"}


def test_a_partial_sign_in_is_found_by_its_secret_and_spent_once(db: Session) -> None:
    partials = PartialLogins(db)
    raw = partials.begin("u1", None, "/account", NOW)
    db.flush()
    partial = partials.live(raw, NOW + PARTIAL_LOGIN_TTL - timedelta(seconds=1))
    assert partial is not None
    assert (partial.user_id, partial.amr, partial.next_path) == ("u1", ["pwd"], "/account")
    assert partials.live("another secret", NOW) is None
    assert partials.live(raw, NOW + PARTIAL_LOGIN_TTL) is None
    assert partials.spend(partial.id_hash, NOW)
    assert not partials.spend(partial.id_hash, NOW)
