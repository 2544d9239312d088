"""Fixtures of the unit tests: services on an in-memory database, without Flask."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from idp.models import Base


@pytest.fixture
def db() -> Iterator[Session]:
    """A Session on an empty in-memory SQLite database with every table (one connection, so
    that every statement of the test sees the same database)."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()
