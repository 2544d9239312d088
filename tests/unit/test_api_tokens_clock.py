"""Admin API tokens made and revoked without an explicit time take their service's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.models import Base
from idp.services.api_tokens import ApiTokenService, Refusal
from idp.services.crypto import KeyedHasher


def test_a_token_lives_and_is_revoked_on_the_service_clock() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    with Session(engine) as db:
        service = ApiTokenService(db, KeyedHasher(b"k" * 32), clock=clock)
        new = service.create("ci", ["clients:read"], expires_in_days=1)
        assert new.token.created_at == clock.now()
        assert new.token.expires_at == clock.now() + timedelta(days=1)
        clock.advance(timedelta(hours=1))
        assert service.authenticate(new.secret, clock.now()) == new.token
        assert service.revoke("ci").revoked_at == clock.now()
        assert isinstance(service.authenticate(new.secret, clock.now()), Refusal)
    engine.dispose()
