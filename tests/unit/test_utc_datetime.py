"""idp.models.base.UTCDateTime binds a timestamp on SQLite as the text SQLAlchemy's own layers
(``process_bind_param`` then the dialect's DATETIME) write, so rows written before and after the
shorter path compare and sort as one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import postgresql, sqlite

from idp.models.base import UTCDateTime

MOMENTS = [
    datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC),  # no microseconds: still six digits
    datetime(2026, 12, 3, 23, 30, 5, 7, tzinfo=timezone(timedelta(hours=-5))),  # another zone
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a year of three digits, zero-padded
    datetime.max.replace(tzinfo=UTC),
]


def _layered(value: datetime) -> str:
    """What SQLAlchemy's own two layers make of ``value``."""
    dialect = sqlite.dialect()
    naive = UTCDateTime().process_bind_param(value, dialect)
    processor = DateTime()._cached_bind_processor(dialect)
    assert processor is not None
    return str(processor(naive))


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_a_timestamp_binds_on_sqlite_as_sqlalchemys_layers_bind_it(moment: datetime) -> None:
    bind = UTCDateTime()._cached_bind_processor(sqlite.dialect())
    assert bind is not None
    assert bind(moment) == _layered(moment)


def test_none_binds_as_null_and_a_naive_timestamp_is_refused() -> None:
    bind = UTCDateTime()._cached_bind_processor(sqlite.dialect())
    assert bind is not None
    assert bind(None) is None
    with pytest.raises(ValueError, match="naive"):
        bind(datetime(2026, 12, 3, 10, 0, 0))  # naive: refused


def test_postgresql_keeps_the_layered_bind() -> None:
    bind = UTCDateTime().bind_processor(postgresql.psycopg.dialect())
    assert bind is not None
    moment = datetime(2026, 12, 3, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    value = bind(moment)  # aware, in UTC: psycopg sends it as timestamptz
    assert value == moment
    assert value.tzinfo == UTC
