"""Thin reads (idp/thin_reads.py) without an application: the column types' bind and result
processors run as through the engine, on a file database (the thread's own connection) and on an
in-memory one (which only the engine's pool can reach, so the read goes through the engine)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, bindparam, create_engine, select
from sqlalchemy.exc import StatementError
from sqlalchemy.pool import StaticPool

from idp.database import configure_engine
from idp.models.base import UTCDateTime
from idp.thin_reads import ThinReads

METADATA = MetaData()
EVENTS = Table(
    "events",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False),
)
AT = select(EVENTS.c.id, EVENTS.c.at).where(EVENTS.c.at == bindparam("at"))
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _engine_with_a_row(url: str, **options: object) -> Engine:
    engine = create_engine(url, **options)  # type: ignore[arg-type]
    configure_engine(engine)
    METADATA.create_all(engine)
    with engine.begin() as connection:
        connection.execute(EVENTS.insert().values(id=1, at=WHEN))
    return engine


@pytest.mark.parametrize("where", ["file", "memory"])
def test_parameters_and_results_are_converted_by_the_column_types(
    tmp_path: Path, where: str
) -> None:
    engine = (
        _engine_with_a_row(f"sqlite:///{tmp_path / 'thin.db'}")
        if where == "file"
        else _engine_with_a_row("sqlite://", poolclass=StaticPool)
    )
    try:
        reads = ThinReads(engine)
        # UTCDateTime's bind processor: an aware time in another zone finds the UTC row.
        elsewhere = WHEN.astimezone(timezone(timedelta(hours=5)))
        row = reads.first(AT, {"at": elsewhere})
        assert row is not None
        # ... and its result processor: aware, as through the engine.
        assert row.at == WHEN
        assert row.at.utcoffset() == timedelta(0)
        with engine.connect() as connection:
            assert tuple(row) == tuple(connection.execute(AT, {"at": WHEN}).one())
        assert reads.all(AT, {"at": WHEN + timedelta(seconds=1)}) == []
        # The type's refusal of a naive time (the engine wraps it in a StatementError).
        with pytest.raises((ValueError, StatementError), match="naive"):
            reads.first(AT, {"at": WHEN.replace(tzinfo=None)})
    finally:
        engine.dispose()
