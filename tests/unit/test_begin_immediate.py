"""SQLite's write lock taken with short waits (idp.database.begin_immediate)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from idp.database import BUSY_TIMEOUT_MS, begin_immediate


@pytest.fixture
def two_connections(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, sqlite3.Connection]]:
    path = tmp_path / "turns.db"
    first = sqlite3.connect(path, isolation_level=None)
    second = sqlite3.connect(path, isolation_level=None)
    first.execute("PRAGMA journal_mode=WAL")
    first.execute("CREATE TABLE t (n INTEGER)")
    for connection in (first, second):
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    with contextlib.closing(first), contextlib.closing(second):
        yield first, second


def test_a_free_lock_is_taken_at_once_and_the_connection_keeps_its_wait(
    two_connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    first, _ = two_connections
    slept: list[float] = []
    begin_immediate(first.cursor(), sleep=slept.append)
    assert first.in_transaction
    assert slept == []
    assert first.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    first.rollback()


def test_a_taken_lock_is_waited_for_in_sleeps_of_at_most_a_millisecond(
    two_connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    holder, waiter = two_connections
    holder.execute("BEGIN IMMEDIATE")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        # The holder commits while the waiter sleeps for the eighth time: no clock involved.
        slept.append(seconds)
        if len(slept) == 8:
            holder.execute("INSERT INTO t VALUES (1)")
            holder.commit()

    begin_immediate(waiter.cursor(), sleep=sleep)
    assert waiter.in_transaction
    assert len(slept) == 8
    # SQLite's own wait would have slept 1, 2, 5, 10, ... ms between its tries.
    assert slept[0] == 0.00005
    assert max(slept) == 0.001
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert waiter.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    waiter.rollback()


def test_a_lock_held_past_the_busy_timeout_fails_as_sqlite_s_own_wait_does(
    two_connections: tuple[sqlite3.Connection, sqlite3.Connection],
) -> None:
    holder, waiter = two_connections
    holder.execute("BEGIN IMMEDIATE")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += 100.0  # the clock jumps past the deadline

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter.cursor(), sleep=sleep, clock=lambda: now[0])
    assert not waiter.in_transaction
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    holder.rollback()
