"""SQLite writers take turns (idp.sqlite_writers): a writer that finds another's transaction open
waits for its turn, not in SQLite's busy handler.

Each test gives the waiting writer a connection whose own ``busy_timeout`` is 0: without the
turn, its ``BEGIN IMMEDIATE`` would fail at once with "database is locked" while the other
writer holds the lock. The test lets the holder commit only once the waiter is seen waiting in
``WriterLine.take``, so nothing depends on timing."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from idp import sqlite_writers
from tests.support.writers import wait_until_waiting_for_turn


def _turn_taking(path: Path, timeout: float) -> type[sqlite3.Connection]:
    factory = sqlite_writers.connection_factory(str(path), timeout=timeout)
    assert factory is not None
    return factory


def _connect(factory: type[sqlite3.Connection], path: Path, busy_ms: int) -> Any:
    connection = sqlite3.connect(path, factory=factory, check_same_thread=False)
    connection.isolation_level = None
    connection.execute(f"PRAGMA busy_timeout={busy_ms}")
    return connection


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "idp.sqlite3"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")  # persistent: every connection writes in WAL mode
    setup.execute("CREATE TABLE spends (id INTEGER PRIMARY KEY, who TEXT)")
    setup.commit()
    setup.close()
    return path


def _write(connection: Any, who: str, outcome: dict[str, object]) -> None:
    try:
        cursor = connection.cursor()
        sqlite_writers.begin_immediate(connection, cursor)
        cursor.execute("INSERT INTO spends (who) VALUES (?)", (who,))
        connection.commit()
        outcome["ok"] = True
    except Exception as error:  # the test reads it
        outcome["error"] = error


def _written(connection: Any, who: str) -> dict[str, object]:
    """``_write`` in this thread: what it recorded."""
    outcome: dict[str, object] = {}
    _write(connection, who, outcome)
    return outcome


def _written_once_released(waiter: Any, who: str, release: Callable[[], None]) -> dict[str, object]:
    """``_write`` in a thread of its own while another writer holds its turn; ``release`` ends
    that writer's transaction once the thread is seen waiting in ``WriterLine.take``. What
    ``_write`` recorded."""
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=_write, args=(waiter, who, outcome))
    thread.start()
    wait_until_waiting_for_turn(thread, outcome)
    release()
    thread.join(timeout=30)
    return outcome


def _who(path: Path) -> list[str]:
    reader = sqlite3.connect(path)
    try:
        return [row[0] for row in reader.execute("SELECT who FROM spends ORDER BY id")]
    finally:
        reader.close()


def test_a_second_thread_waits_for_its_turn_instead_of_being_told_the_database_is_locked(
    tmp_path: Path,
) -> None:
    path = _database(tmp_path)
    factory = _turn_taking(path, timeout=30)
    holder = _connect(factory, path, busy_ms=30_000)
    waiter = _connect(factory, path, busy_ms=0)
    cursor = holder.cursor()
    sqlite_writers.begin_immediate(holder, cursor)
    cursor.execute("INSERT INTO spends (who) VALUES ('holder')")

    assert _written_once_released(waiter, "waiter", holder.commit) == {"ok": True}
    assert _who(path) == ["holder", "waiter"]


HOLDER = """
import sqlite3, sys
from idp import sqlite_writers
factory = sqlite_writers.connection_factory(sys.argv[1], timeout=30)
connection = sqlite3.connect(sys.argv[1], factory=factory)
connection.isolation_level = None
cursor = connection.cursor()
sqlite_writers.begin_immediate(connection, cursor)
cursor.execute("INSERT INTO spends (who) VALUES ('other process')")
print("holding", flush=True)
sys.stdin.readline()
connection.commit()
"""


@contextlib.contextmanager
def _another_process_holding(path: Path) -> Iterator[Callable[[], None]]:
    """Another process inside a write transaction on ``path`` (its turn taken); what is yielded
    makes it commit and end."""
    other = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None
        assert other.stdin is not None
        assert other.stdout.readline().strip() == "holding"
        stdin = other.stdin

        def commit() -> None:
            stdin.write("commit\n")
            stdin.flush()
            assert other.wait(timeout=30) == 0

        yield commit
    finally:
        other.kill()


def test_a_writer_waits_for_another_process_s_turn_instead_of_being_told_the_database_is_locked(
    tmp_path: Path,
) -> None:
    path = _database(tmp_path)
    factory = _turn_taking(path, timeout=30)
    waiter = _connect(factory, path, busy_ms=0)
    # A read first, as a server's connections have made before they write: in WAL mode a
    # connection that has read keeps a shared lock on the database file. Without one, the other
    # process's connection, closed as it exits, is the last one: it checkpoints and removes the
    # WAL under an exclusive lock (sqlite.org/wal.html), which this writer's busy_timeout of 0
    # meets as "database is locked" when its turn comes that soon.
    assert waiter.execute("SELECT count(*) FROM spends").fetchall() == [(0,)]
    with _another_process_holding(path) as commit:
        assert _written_once_released(waiter, "this process", commit) == {"ok": True}
    assert _who(path) == ["other process", "this process"]


def test_a_writer_that_waits_longer_than_the_busy_timeout_is_told_the_database_is_locked(
    tmp_path: Path,
) -> None:
    path = _database(tmp_path)
    factory = _turn_taking(path, timeout=0.05)
    holder = _connect(factory, path, busy_ms=30_000)
    sqlite_writers.begin_immediate(holder, holder.cursor())
    waiter = _connect(factory, path, busy_ms=30_000)

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        sqlite_writers.begin_immediate(waiter, waiter.cursor())
    assert not waiter.in_transaction
    holder.rollback()


def test_the_turn_is_given_back_by_a_rollback_and_by_closing_the_connection(
    tmp_path: Path,
) -> None:
    path = _database(tmp_path)
    factory = _turn_taking(path, timeout=0.05)
    first = _connect(factory, path, busy_ms=0)
    sqlite_writers.begin_immediate(first, first.cursor())
    first.rollback()
    second = _connect(factory, path, busy_ms=0)
    sqlite_writers.begin_immediate(second, second.cursor())  # would time out with the turn kept
    second.close()
    third = _connect(factory, path, busy_ms=0)
    sqlite_writers.begin_immediate(third, third.cursor())
    third.commit()


def test_an_in_memory_database_takes_no_turns() -> None:
    assert sqlite_writers.connection_factory(":memory:", timeout=30) is None
    assert sqlite_writers.connection_factory(None, timeout=30) is None


def test_a_writer_that_gave_up_waiting_for_another_process_leaves_the_lock_to_the_next(
    tmp_path: Path,
) -> None:
    """The process's waiting thread gets the file's lock after the writer that asked for it gave
    up: it lets go at once, and the process's next writer still gets its turn."""
    path = _database(tmp_path)
    impatient = _turn_taking(path, timeout=0.05)
    waiter = _connect(impatient, path, busy_ms=0)
    with _another_process_holding(path) as commit:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            sqlite_writers.begin_immediate(waiter, waiter.cursor())
        commit()

    patient = _turn_taking(path, timeout=30)
    assert _written(_connect(patient, path, busy_ms=0), "next") == {"ok": True}
    assert _who(path) == ["other process", "next"]


def test_the_lock_file_takes_the_database_file_s_permissions_and_owner(tmp_path: Path) -> None:
    """As SQLite's own -wal and -shm files do: a command run as root must not leave a file the
    server's user cannot open."""
    path = _database(tmp_path)
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)  # nobody
    factory = _turn_taking(path, timeout=30)
    assert _written(_connect(factory, path, busy_ms=0), "first") == {"ok": True}

    made = os.stat(f"{path}-writer")
    assert made.st_mode & 0o777 == 0o640 & ~_umask()
    if os.geteuid() == 0:
        assert (made.st_uid, made.st_gid) == (65534, 65534)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_a_lock_file_that_cannot_be_opened_leaves_the_writers_to_sqlite_s_own_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _database(tmp_path)
    Path(f"{path}-writer").mkdir()  # something that is not a file stands in its place
    factory = _turn_taking(path, timeout=30)
    assert _written(_connect(factory, path, busy_ms=30_000), "still written") == {"ok": True}
    assert _who(path) == ["still written"]
    assert "cannot take turns between processes" in caplog.text


def test_every_name_of_one_database_file_shares_one_line(tmp_path: Path) -> None:
    """A symbolic link or a relative path names the same file: the same lock file, or writers
    under two names would not wait for each other."""
    path = _database(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path)
    direct = _turn_taking(path, timeout=30)
    linked = _turn_taking(tmp_path / "link" / path.name, timeout=30)
    assert linked.line is direct.line  # type: ignore[attr-defined]
    assert direct.line.path == f"{path.resolve()}-writer"  # type: ignore[attr-defined]
