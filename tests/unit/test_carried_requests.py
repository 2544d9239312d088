"""Authorization requests carried by their sign-in pages, without Flask
(idp.services.carried_requests; their rows: idp.services.pending_authorizations)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from idp.clock import KEPT_PAST_EXPIRY, STAMPED_AHEAD_TOLERANCE
from idp.models import Base, Client
from idp.services.carried_requests import (
    MAX_CARRIED_LENGTH,
    RequestSigner,
    is_carried,
)
from idp.services.pending_authorizations import LivePending, PendingAuthorizations
from idp.services.retention import RetentionPolicy, prune

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
PARAMS = {"scope": "openid", "state": "s", "prompt": ["login"], "max_age": None}
SIGNER = RequestSigner("a deployment's secret key of enough length")


def test_a_carried_request_reads_back_as_it_was_signed_until_it_expires() -> None:
    carried = SIGNER.carry("app", PARAMS, NOW, ttl=60)
    assert is_carried(carried.carried)
    read = SIGNER.read(carried.carried, NOW + timedelta(seconds=59))
    assert read == carried
    # To the microsecond: the request's start is compared with a session's (prompt=login).
    assert read is not None
    assert read.created_at == NOW
    assert SIGNER.read(carried.carried, NOW + timedelta(seconds=60)) is None
    assert SIGNER.carry("app", PARAMS, NOW, ttl=60).id != carried.id  # a new id each


def test_a_carried_request_changed_or_signed_elsewhere_is_none() -> None:
    carried = SIGNER.carry("app", PARAMS, NOW, ttl=60).carried
    payload, tag = carried.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["c"] = "another-app"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    other = RequestSigner("another deployment's secret key")
    assert SIGNER.read(f"{forged}.{tag}", NOW) is None
    assert SIGNER.read(f"{payload}.{tag[:-1]}0" if tag[-1] != "0" else f"{payload}.{tag[:-1]}1",
                       NOW) is None  # fmt: skip
    assert SIGNER.read(other.carry("app", PARAMS, NOW, ttl=60).carried, NOW) is None
    assert SIGNER.read(f"{payload}.{tag}é", NOW) is None
    assert SIGNER.read("x" * MAX_CARRIED_LENGTH + "." + tag, NOW) is None
    assert not is_carried("a-stored-id-of-32-characters-xyz")


def test_a_carried_request_stamped_ahead_of_the_clock_is_none() -> None:
    """A clock stepped back since the request was signed: its row may have been pruned on the
    other clock, and a second code would come from it (idp.clock ``stamped_ahead``)."""
    carried = SIGNER.carry("app", PARAMS, NOW, ttl=3600).carried
    assert SIGNER.read(carried, NOW - STAMPED_AHEAD_TOLERANCE) is not None
    assert SIGNER.read(carried, NOW - STAMPED_AHEAD_TOLERANCE - timedelta(seconds=1)) is None


@pytest.fixture
def db() -> Iterator[Session]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        client = Client(client_id="app", name="App", token_endpoint_auth_method="none")
        session.add(client)
        session.flush()
        yield session
    engine.dispose()


def _shown(db: Session) -> LivePending:
    carried = SIGNER.carry("app", PARAMS, NOW, ttl=60)
    client = db.get(Client, "app")
    assert client is not None
    return LivePending(id=carried.id, client_id="app", params=carried.params,
                       created_at=carried.created_at, consented_by=None, client=client,
                       carried=carried)  # fmt: skip


def test_a_carried_request_is_spent_once(db: Session) -> None:
    """Its spend stores it spent (one INSERT); the same page's second answer stores nothing and
    spends nothing."""
    pending, requests = _shown(db), PendingAuthorizations(db)
    assert pending.sent_back == pending.carried.carried  # type: ignore[union-attr]
    assert requests.spend(pending, NOW)
    assert not requests.spend(pending, NOW)
    assert requests.live(pending.id, NOW) is None


def test_a_carried_request_stored_to_wait_is_spent_once_as_a_stored_one(db: Session) -> None:
    """Stored live (the second step, consent), it is found by its id and spent once, by the
    carried request or by its id; storing it again changes nothing."""
    pending, requests = _shown(db), PendingAuthorizations(db)
    requests.store_carried(pending)
    requests.store_carried(pending)
    stored = requests.live(pending.id, NOW)
    assert stored is not None
    assert stored.params == PARAMS
    assert stored.created_at == NOW
    assert stored.expires_at == NOW.replace(microsecond=0) + timedelta(seconds=60)
    assert requests.spend(pending, NOW)
    assert not requests.spend(stored, NOW)
    requests.store_carried(pending)  # spent stays spent
    db.expire_all()
    assert requests.live(pending.id, NOW) is None


def test_the_row_of_a_spent_request_outlives_it_by_more_than_a_clock_may_read_ahead(
    db: Session,
) -> None:
    """Retention keeps a request's row ``KEPT_PAST_EXPIRY`` past its expiry: a node whose clock
    reads ahead by up to the tolerance prunes no row that another node's ``read`` still takes,
    so a spent request never comes back unspent."""
    assert KEPT_PAST_EXPIRY > STAMPED_AHEAD_TOLERANCE
    pending, requests = _shown(db), PendingAuthorizations(db)
    assert requests.spend(pending, NOW)
    db.commit()
    expiry = pending.carried.expires_at  # type: ignore[union-attr]

    def pruned_at(now: datetime) -> int:
        policy = RetentionPolicy(now=now, audit_retention_days=0, session_idle_ttl=3600,
                                 refresh_token_ttl=3600)  # fmt: skip
        return prune(db, policy)["pending_authorizations"]

    assert pruned_at(expiry + STAMPED_AHEAD_TOLERANCE) == 0
    assert pruned_at(expiry + KEPT_PAST_EXPIRY) == 0
    assert pruned_at(expiry + KEPT_PAST_EXPIRY + timedelta(seconds=1)) == 1
