"""Declarative base and column types shared by every model."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm.attributes import instance_state, manager_of_class
from sqlalchemy.types import TypeDecorator

# Stable constraint names so that Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def random_id(nbytes: int = 16) -> str:
    """An opaque, URL-safe identifier (128 bits by default). Never one that starts with "-":
    ids are passed to the ``idp`` command line (``idp clients delete ID``), where a leading dash
    reads as an option (one id in 64 would otherwise)."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


_Mapped = TypeVar("_Mapped")


def from_values(cls: type[_Mapped], values: Mapping[str, Any]) -> _Mapped:
    """An instance of the mapped class ``cls`` holding ``values`` (column keys, or a relationship
    to an object already made), made as SQLAlchemy's loader makes one from a row: the values go
    into the instance's state at once. The declarative constructor sets them one by one through
    the attribute events, each recording a change (most of the cost of a 25-column object, about
    15 times this; docs/performance.md). Nothing is recorded as changed: the instance belongs to
    no session until the caller attaches it as a row that exists (``make_transient_to_detached``)
    or keeps it out of every session (a ``Client`` read beside another row)."""
    instance = manager_of_class(cls).new_instance()
    instance_state(instance).dict.update(values)
    return instance


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored as UTC and always come back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        # On SQLite, ``process_bind_param`` and the dialect's own DATETIME formatting as one
        # function: every write binds a few timestamps, and the two layers cost twice this
        # (docs/performance.md, "Before and after, per change"). The text is the dialect's
        # storage format, ``YYYY-MM-DD HH:MM:SS.ffffff`` (tests/unit/test_utc_datetime.py).
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError("a UTC column takes a datetime")
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
