"""SQLite's one writer at a time, taken in turn: a writer that finds the write lock held waits
for it to be released, not for a timer.

SQLite lets one connection write at a time and makes the others wait with its busy handler,
which sleeps and tries again: 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms and then 100 ms
until ``busy_timeout`` (sqlite.org/c3ref/busy_timeout.html; ``sqliteDefaultBusyCallback`` in its
source). A writer that tries while another holds the lock therefore sleeps through a ladder of
timers, however soon the lock is released: under a steady load eight writers (a server's two
processes of four threads) kept missing their retries, and a sign-in's ``BEGIN IMMEDIATE``
waited up to 183 ms for a lock held a millisecond at a time (docs/performance-rounds.md, "The
twelfth round").

So every writer of idp's engines takes a turn before it asks SQLite for the lock: the threads
of a process queue on a lock of the process, which hands over to the next as it is released,
and the processes on one database take an advisory lock (``flock``) on a file beside it,
``<database>-writer``, for which one thread of each process sleeps in the kernel while
another process holds it (``_InThisProcess``): no polling, which costs CPU
(docs/performance-rounds.md, "The fifth round", tried SQLite's wait in short sleeps), and no timer.
SQLite's own lock and busy handler stay underneath, for any writer that takes no turn (the
``sqlite3`` shell, a backup, Alembic's migrations): a turn only puts idp's writers in a line.

A connection takes its turn before its transaction's ``BEGIN IMMEDIATE`` (idp.database) or its
lone autocommitted write (idp.thin_reads) and gives it back when the transaction ends: at its
commit, its rollback or its close, whichever comes first. A writer that waits longer than the
busy timeout gets SQLite's own answer, "database is locked" (a 503, idp.unavailable).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class WriterLine:
    """The writers of one SQLite database file, in this process and in every other one."""

    def __init__(self, database: str, timeout: float) -> None:
        self.database = os.path.realpath(database)
        self.path = self.database + "-writer"
        self.timeout = timeout
        self._here: _InThisProcess | None = None

    def _this_process(self) -> _InThisProcess:
        # A forked child has a line of its own: the parent's lock may have been held by a thread
        # the child does not have, and a descriptor shared with the parent shares its flock.
        here = self._here
        if here is None or here.pid != os.getpid():
            with _MAKING:
                here = self._here
                if here is None or here.pid != os.getpid():
                    here = self._here = _InThisProcess(self.database, self.path)
        return here

    def take(self) -> None:
        """Wait for this writer's turn; SQLite's "database is locked" after the busy timeout."""
        here = self._this_process()
        deadline = time.monotonic() + self.timeout
        if not here.threads.acquire(timeout=self.timeout):
            raise sqlite3.OperationalError("database is locked")
        try:
            here.lock_file(max(0.0, deadline - time.monotonic()))
        except BaseException:
            here.threads.release()
            raise

    def give_back(self) -> None:
        here = self._this_process()
        if here.file >= 0:
            fcntl.flock(here.file, fcntl.LOCK_UN)
        here.threads.release()


_MAKING = threading.Lock()


def _open_beside(database: str, path: str) -> int:
    """The lock file beside ``database``, opened (made if missing) as SQLite makes its ``-wal``
    and ``-shm`` files: with the database file's permissions and, for a process running as root,
    its owner (``findCreateFileMode`` and ``robust_open`` in SQLite's unix VFS), so that an
    operator's command run as root does not leave a file the server's user cannot open. A file
    that cannot be opened leaves the processes to SQLite's busy handler, as before the turns,
    and says so once in the log: slower to hand over under load, never an outage."""
    try:
        owner = os.stat(database)
        mode, uid, gid = owner.st_mode & 0o666, owner.st_uid, owner.st_gid
    except OSError:
        mode, uid, gid = 0o600, -1, -1
    try:
        file = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    except OSError as error:
        logging.getLogger(__name__).warning(
            "SQLite writers cannot take turns between processes: %s", error
        )
        return -1
    if os.geteuid() == 0 and uid >= 0:
        with contextlib.suppress(OSError):
            os.fchown(file, uid, gid)
    return file


_IDLE, _WANTED, _GRANTED, _ABANDONED = range(4)


class _InThisProcess:
    """A line in one process: the lock its threads queue on, its descriptor of the lock file,
    and a thread that waits in ``flock`` for the other processes' writers.

    The thread whose turn it is in the process asks for the file's lock without waiting; if
    another process holds it, it hands the wait to the waiting thread, which sleeps in the kernel
    until the lock is released (no polling, no timer), and waits for that thread's word at most
    the busy timeout. A writer that gave up leaves the lock to be released the moment the
    waiting thread gets it, unless the next writer of the process has asked meanwhile."""

    def __init__(self, database: str, path: str) -> None:
        self.pid = os.getpid()
        self.threads = threading.Lock()
        self.file = _open_beside(database, path)
        self._changed = threading.Condition(threading.Lock())
        self._state = _IDLE
        self._waiter: threading.Thread | None = None

    def lock_file(self, timeout: float) -> None:
        if self.file < 0:
            return  # no lock file: SQLite's busy handler orders the processes (``_open_beside``)
        with self._changed:
            if self._state == _IDLE:  # the waiting thread holds nothing on this descriptor
                try:
                    fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
            self._state = _WANTED
            if self._waiter is None:
                self._waiter = threading.Thread(
                    target=self._wait_for_other_processes, name="sqlite-writer-turns", daemon=True
                )
                self._waiter.start()
            self._changed.notify_all()
            if self._changed.wait_for(lambda: self._state == _GRANTED, timeout):
                self._state = _IDLE
                return
            self._state = _ABANDONED
        raise sqlite3.OperationalError("database is locked")

    def _wait_for_other_processes(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._state == _WANTED)
            fcntl.flock(self.file, fcntl.LOCK_EX)  # the GIL released while it waits
            with self._changed:
                if self._state == _WANTED:
                    self._state = _GRANTED
                    self._changed.notify_all()
                else:  # the writer gave up and no other asked since
                    fcntl.flock(self.file, fcntl.LOCK_UN)
                    self._state = _IDLE


class TurnTakingConnection(sqlite3.Connection):
    """A connection that takes its ``line``'s turn for its writes (the module's docstring)."""

    line: WriterLine
    _has_turn = False

    def take_turn(self) -> None:
        if not self._has_turn:  # a transaction SQLite rolled back by itself still holds it
            self.line.take()
            self._has_turn = True

    def _give_back_turn(self) -> None:
        if self._has_turn and not self.in_transaction:
            self._let_go()

    def _let_go(self) -> None:
        self._has_turn = False
        self.line.give_back()

    def begin_immediate(self, cursor: sqlite3.Cursor) -> None:
        """``BEGIN IMMEDIATE`` in this connection's turn."""
        self.take_turn()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        finally:
            self._give_back_turn()  # kept while the transaction is open

    @contextmanager
    def lone_write(self) -> Iterator[None]:
        """A write in autocommit (its own transaction) in this connection's turn."""
        self.take_turn()
        try:
            yield
        finally:
            self._give_back_turn()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._give_back_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._give_back_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._has_turn:  # a closed connection has no transaction to ask about
                self._let_go()


def connection_factory(database: str | None, timeout: float) -> type[sqlite3.Connection] | None:
    """The ``sqlite3.connect`` factory whose connections take turns on ``database``, or None for
    a database no other connection can write to (in memory)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    # The file itself, however it is named (a symbolic link, a relative path): every process on it
    # must find the same lock file.
    key = (os.path.realpath(database), timeout)
    with _MAKING:
        # One line per database file in a process, however many engines open it (every
        # application a process builds, the test suite's many): one descriptor, one thread.
        line = _LINES.get(key)
        if line is None:
            line = _LINES[key] = WriterLine(database, timeout)
    return type("TurnTakingConnection", (TurnTakingConnection,), {"line": line})


_LINES: dict[tuple[str, float], WriterLine] = {}


def begin_immediate(connection: Any, cursor: Any) -> None:
    """``BEGIN IMMEDIATE`` on ``connection``, in its turn if it takes turns."""
    if isinstance(connection, TurnTakingConnection):
        connection.begin_immediate(cursor)
    else:
        cursor.execute("BEGIN IMMEDIATE")
