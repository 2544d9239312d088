"""The engine's psycopg connections on PostgreSQL: fewer round trips and less Python per statement
(docs/performance.md, "PostgreSQL against SQLite"), nothing a rule depends on left out.

- **BEGIN is the check at checkout.** A connection out of the pool must work even after
  PostgreSQL restarted or ended its backend (docs/operations.md, "PostgreSQL stopped, and back"):
  no request may fail on a stale connection. SQLAlchemy's ``pool_pre_ping`` checks that with a
  round trip of its own (an empty query, in autocommit), after which psycopg sends ``BEGIN``,
  another round trip, before the first statement. Here ``BEGIN`` is sent at checkout and is the
  check: it either opens the transaction the checkout is for (psycopg sends no ``BEGIN`` of its
  own inside an open transaction) or fails, and then ``InvalidatePoolError`` makes the pool do
  what a failed pre-ping does: discard this connection and every older one, connect anew and run
  the check again, all before the caller ran anything (tests/functional/test_outages.py ends
  every backend of a node, then no request fails). A connection therefore leaves the pool inside
  a transaction: its ``autocommit`` and ``isolation_level`` cannot be changed while checked out
  (psycopg refuses), which nothing in idp does. An engine that needs them (the tests'
  administrative one, in autocommit) is created without :func:`configure_postgresql`.
- **Cursor descriptions on demand.** SQLAlchemy reads ``cursor.description`` after every
  statement, but once a compiled statement's result metadata is cached (every statement of a
  warm process) it only asks whether there is one; psycopg builds a ``Column`` object per column
  each time (a joined load has dozens). :class:`DescribedOnDemandCursor` answers with a sequence
  that builds them when first read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import psycopg
from psycopg import pq
from sqlalchemy import Engine, event
from sqlalchemy.exc import InvalidatePoolError

_TUPLES = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.SINGLE_TUPLE, pq.ExecStatus.TUPLES_CHUNK)


def configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _describe_on_demand(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.cursor_factory = DescribedOnDemandCursor

    @event.listens_for(engine, "checkout")
    def _begin_or_reconnect(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        begin_or_reconnect(dbapi_connection)


def begin_or_reconnect(dbapi_connection: psycopg.Connection[Any]) -> None:
    """Open the checkout's transaction, or raise ``InvalidatePoolError`` if the connection is
    dead (module docstring). Called once per checkout, not per transaction: after a commit in
    the same checkout psycopg sends its own ``BEGIN`` before the next statement."""
    pgconn = dbapi_connection.pgconn
    status = pgconn.transaction_status
    if status == pq.TransactionStatus.UNKNOWN:  # libpq knows the connection is bad already
        raise InvalidatePoolError("the connection is broken")
    if status != pq.TransactionStatus.IDLE:
        return  # a transaction is open already: psycopg sends nothing more
    try:
        result = pgconn.exec_(b"BEGIN")  # libpq's PQexec; the GIL is released while it waits
    except psycopg.Error as error:  # the connection is closed on this side already
        raise InvalidatePoolError(str(error)) from error
    if result.status != pq.ExecStatus.COMMAND_OK:
        reason = pgconn.get_error_message().strip()
        raise InvalidatePoolError(reason or "BEGIN failed")


def begin(dbapi_connection: psycopg.Connection[Any]) -> None:
    """Send ``BEGIN`` on a connection in autocommit (a thin transaction, idp.thin_reads) by
    libpq's ``PQexec``, past the cursor's Python path; a failure is psycopg's
    ``OperationalError``, and a dropped connection is then ``broken`` (what SQLAlchemy's
    ``is_disconnect`` reads)."""
    pgconn = dbapi_connection.pgconn
    result = pgconn.exec_(b"BEGIN")
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.OperationalError(pgconn.get_error_message().strip() or "BEGIN failed")


class DescribedOnDemandCursor(psycopg.Cursor[Any]):
    """psycopg's cursor whose ``description`` builds its ``Column`` objects when first read."""

    @property
    def description(self) -> Sequence[psycopg.Column] | None:  # type: ignore[override]
        result = self.pgresult
        # psycopg's own test: columns, or a statement that said it returned rows ("SELECT ;").
        if result is None or not (result.nfields or result.status in _TUPLES):
            return None
        return _Description(self, result)


class _Description(Sequence[psycopg.Column]):
    """The columns of one result of a cursor, built by psycopg the first time they are read."""

    __slots__ = ("_columns", "_cursor", "_result")

    def __init__(self, cursor: DescribedOnDemandCursor, result: pq.abc.PGresult) -> None:
        self._cursor = cursor
        self._result = result
        self._columns: list[psycopg.Column] | None = None

    def _built(self) -> list[psycopg.Column]:
        if self._columns is None:
            if self._cursor.pgresult is not self._result:
                # psycopg's Column reads the cursor's current result: refuse rather than
                # describe another one (SQLAlchemy reads a description before the next execute).
                raise psycopg.InterfaceError("the cursor has moved on from this result")
            self._columns = psycopg.Cursor.description.fget(self._cursor) or []  # type: ignore[attr-defined]
        return self._columns

    @overload
    def __getitem__(self, index: int) -> psycopg.Column: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[psycopg.Column]: ...
    def __getitem__(self, index: int | slice) -> psycopg.Column | Sequence[psycopg.Column]:
        return self._built()[index]

    def __len__(self) -> int:
        return len(self._built())

    def __iter__(self) -> Iterator[psycopg.Column]:
        return iter(self._built())

    def __repr__(self) -> str:
        return repr(self._built())
