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
from idp.services.audit import RequestContext
from idp.services.partial_logins import PARTIAL_LOGIN_TTL, PartialLogins
from idp.services.pending_authorizations import (
    MAX_REQUEST_URI,
    REQUEST_URI_PREFIX,
    PendingAuthorizations,
)
from idp.services.users import replace_password

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


def test_a_pushed_request_is_spent_once_by_its_client_before_it_expires(db: Session) -> None:
    """RFC 9126 2.2 and 4: the request_uri is the urn prefix and 256 random bits; it gives its
    parameters back once, to the client that pushed it, before ``ttl`` ends; a value that is
    not of idp's form, or longer than one can be, is none without a lookup."""
    db.add(Client(client_id="other", name="Other", token_endpoint_auth_method="none"))
    pending = PendingAuthorizations(db)
    request_uri = pending.push("app", {"scope": "openid"}, NOW, ttl=60, context=RequestContext())
    assert request_uri.startswith(REQUEST_URI_PREFIX)
    assert len(request_uri) - len(REQUEST_URI_PREFIX) == 43 <= MAX_REQUEST_URI
    later = NOW + timedelta(seconds=60)
    assert pending.spend_pushed(request_uri, "app", later) is None  # expired
    assert pending.spend_pushed(request_uri, "other", NOW) is None  # another client's
    assert pending.spend_pushed(request_uri + "x", "app", NOW) is None
    assert pending.spend_pushed(request_uri.removeprefix(REQUEST_URI_PREFIX), "app", NOW) is None
    assert pending.spend_pushed(REQUEST_URI_PREFIX + "x" * 200, "app", NOW) is None
    assert pending.spend_pushed(request_uri, "app", NOW) == {"scope": "openid"}
    assert pending.spend_pushed(request_uri, "app", NOW) is None  # spent


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
    raw = partials.begin("u1", None, "/account", NOW, password_version=0)
    db.flush()
    partial = partials.live(raw, NOW + PARTIAL_LOGIN_TTL - timedelta(seconds=1))
    assert partial is not None
    assert (partial.user_id, partial.amr, partial.next_path) == ("u1", ["pwd"], "/account")
    assert partials.live("another secret", NOW) is None
    assert partials.live(raw, NOW + PARTIAL_LOGIN_TTL) is None
    assert partials.spend(partial.id_hash, NOW)
    assert not partials.spend(partial.id_hash, NOW)


def test_a_partial_sign_in_whose_password_was_replaced_is_not_spent(db: Session) -> None:
    """The second step finishes only while the password its check read is the user's: a change
    since (``replace_password``) moves the version, and the spend finds nothing."""
    partials = PartialLogins(db)
    raw = partials.begin("u1", None, "/account", NOW, password_version=0)
    user = db.get(User, "u1")
    assert user is not None
    replace_password(user, "a new hash")
    db.flush()
    partial = partials.live(raw, NOW)
    assert partial is not None
    assert not partials.spend(partial.id_hash, NOW)
    again = partials.begin("u1", None, "/account", NOW, password_version=1)
    db.flush()
    live = partials.live(again, NOW)
    assert live is not None
    assert partials.spend(live.id_hash, NOW)
