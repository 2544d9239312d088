"""SQLite transactions as idp configures them: the write lock is taken at the first write (BEGIN
IMMEDIATE), never for reads, and SELECT ... FOR UPDATE takes it too (idp/database.py)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select, update
from sqlalchemy.orm import Session

from idp.database import configure_engine
from idp.models import Base, User


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'locks.db'}",
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    configure_engine(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(User(email="a@example.com", name="A"))
        session.commit()
    yield engine
    engine.dispose()


def _other_writer(tmp_path: Path) -> sqlite3.Connection:
    """A second connection that holds SQLite's write lock until it commits."""
    other = sqlite3.connect(tmp_path / "locks.db", timeout=0.2, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE users SET name = 'held' WHERE email = 'a@example.com'")
    return other


def test_reads_never_wait_for_the_write_lock(engine: Engine, tmp_path: Path) -> None:
    other = _other_writer(tmp_path)
    try:
        started = time.monotonic()
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(User)) == 1
            assert session.scalar(select(User.name)) == "A"  # the committed value
            session.commit()
        assert time.monotonic() - started < 1.0
    finally:
        other.rollback()
        other.close()


def test_the_first_write_waits_for_the_lock_and_then_holds_it(
    engine: Engine, tmp_path: Path
) -> None:
    with Session(engine) as session:
        session.execute(update(User).values(name="B"))
        # The session now holds the write lock: another writer cannot get it.
        other = sqlite3.connect(tmp_path / "locks.db", timeout=0.2, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        session.commit()
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.rollback()
        other.close()


def test_a_read_then_write_transaction_sees_no_stale_snapshot_error(
    engine: Engine, tmp_path: Path
) -> None:
    """The reason for BEGIN IMMEDIATE: in WAL mode a deferred transaction that has read and then
    writes after another connection committed fails with SQLITE_BUSY_SNAPSHOT ("database is
    locked") instead of waiting. Reads before the first write are not part of the transaction's
    snapshot here, so the write waits for the lock and succeeds."""
    with Session(engine) as session:
        assert session.scalar(select(User.name)) == "A"
        other = sqlite3.connect(tmp_path / "locks.db", timeout=5, isolation_level=None)
        other.execute("UPDATE users SET name = 'changed meanwhile'")
        other.close()
        result = session.execute(
            update(User).where(User.name == "changed meanwhile").values(name="C")
        )
        assert result.rowcount == 1  # type: ignore[attr-defined]
        session.commit()


def test_select_for_update_takes_the_write_lock(engine: Engine, tmp_path: Path) -> None:
    """Code that holds rows with SELECT ... FOR UPDATE on PostgreSQL (the last-admin guard) gets
    SQLite's write lock for the rest of its transaction."""
    with Session(engine) as session:
        session.execute(select(User.id).with_for_update()).all()
        other = sqlite3.connect(tmp_path / "locks.db", timeout=0.2, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        session.rollback()
        other.close()
