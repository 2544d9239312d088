"""One-statement reads on a DB-API connection of the thread's own, in autocommit, outside the ORM.

A request whose only database work is one read (the bearer-token lookup of userinfo and
introspection) pays more for the machinery around the statement than for the statement: an ORM
``Session``, a pool checkout with its pre-ping, a Core execution context, and on PostgreSQL a
``BEGIN`` and a ``ROLLBACK`` around it (docs/performance.md, "What limits each figure next").
``ThinReads`` sends such a read on a connection the thread keeps, in autocommit, and keeps what
the engine gives every statement:

- one SQL source: the statement is SQLAlchemy Core, compiled once per engine (its dialect), its
  bind parameters and result values converted by the column types' own processors (``UTCDateTime``
  comes back aware, as through the engine);
- the connection is opened by the engine's pool, so its ``connect`` listeners run (idp.database's
  SQLite PRAGMAs), then detached from the pool: it holds no pool slot and sees no reset;
- the engine's ``before_cursor_execute`` and ``after_cursor_execute`` listeners see every statement
  (the statement counts of the tests and of the benchmark, idp.database);
- a driver error becomes SQLAlchemy's exception (``DBAPIError.instance``), so an outage is what
  ``idp.database.is_outage`` recognises (a 503, not a 500);
- a connection the server dropped (a restart, ``pg_terminate_backend``) is closed and the read
  sent once more on a new one: a read is idempotent, and no request fails on a stale connection,
  which is what ``pool_pre_ping`` gives the pooled connections; ``Engine.dispose`` makes every
  thread open a new one too.

Only single-statement reads belong here: each runs in its own implicit transaction, so two reads
of one request may see different commits, and a read does not see the request's uncommitted
writes. Writes, and reads that must agree with them, go through the request's ``Session``, with
one exception: a write that is the request's only one and needs nothing else in its transaction
(the access token a client-credentials grant records, RFC 6749 4.4.3) is sent by
:meth:`ThinReads.write_alone`, committed on its own; so is a write that must be committed before
anything else of its request happens (a sign-in attempt's count, docs/security.md), by
:meth:`ThinReads.write_alone_returning`. Neither may run while the request's ``Session`` holds a
transaction that wrote: on SQLite the two connections would wait for the one write lock. The
same rule holds for :meth:`ThinReads.begin`'s transaction, for a few statements that are the
request's only ones and belong together (a refresh token's rotation, RFC 6749 6).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Engine, event, exc
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import TextualSelect

from idp.database import LONE_WRITE
from idp.interval_gate import IntervalGate
from idp.sqlite_writers import TurnTakingConnection, begin_immediate
from idp.thin_statements import Inserts, Row, compile_statement, inserts_together
from idp.thin_statements import PreparedStatement as _Prepared
from idp.thin_statements import Statement as _Statement

#: SQLite: seconds between two checkpoints of one process, each after a response
#: (``ThinReads.checkpoint``). SQLite's own automatic checkpoint (idp.database
#: ``WAL_CHECKPOINT_PAGES``) stays as the backstop for writers that serve no requests (the CLI).
CHECKPOINT_INTERVAL = 1.0

#: What a statement sent answers: a read's rows, a write's count of rows changed.
_Answer = TypeVar("_Answer")


class _ThreadConnection(threading.local):
    """This thread's connection and cursor, the engine generation they were opened in, and the
    transaction open on them, if any."""

    dbapi_connection: Any = None
    cursor: Any = None
    generation: int = -1
    transaction: ThinTransaction | None = None


class ThinTransaction:
    """Statements sent in one transaction on the thread's own connection (``ThinReads.begin``),
    then committed or rolled back: each statement keeps what a thin read keeps (one compiled
    form per dialect, the types' conversions, the engine's statement listeners, SQLAlchemy's
    exceptions), and the engine's ``commit`` and ``rollback`` listeners see its end. Nothing is
    sent twice: once a statement was sent, a dropped connection took the transaction with it and
    the error is the caller's (an outage). Once ended, ``commit`` and ``rollback`` do nothing."""

    __slots__ = ("_connection", "_cursor", "_reads")

    def __init__(self, reads: ThinReads, connection: Any, cursor: Any) -> None:
        self._reads, self._connection, self._cursor = reads, connection, cursor

    @property
    def open(self) -> bool:
        return self._connection is not None

    def first(self, statement: _Statement, parameters: Mapping[str, Any]) -> Row | None:
        """The first row a SELECT or a write's RETURNING gives, or None."""
        rows = self._reads._in_transaction(self._cursor, statement, parameters, rows=True)
        return rows[0] if rows else None

    def write(self, statement: UpdateBase, parameters: Mapping[str, Any]) -> int:
        """Send an INSERT, UPDATE or DELETE; the number of rows it changed."""
        changed: int = self._reads._in_transaction(self._cursor, statement, parameters, rows=False)
        return changed

    def write_together(self, parts: Sequence[Inserts]) -> None:
        """Insert ``parts`` in their order: one statement on PostgreSQL, one per part on SQLite
        (idp.thin_statements ``inserts_together``)."""
        reads = self._reads
        one = reads.inserts_in_one_statement
        for statement, parameters in inserts_together(parts, one_statement=one):
            reads._in_transaction(self._cursor, statement, parameters, rows=False)

    def commit(self) -> None:
        """Commit; if that fails, the transaction is rolled back and the error raised."""
        reads, connection = self._reads, self._end()
        if connection is None:
            return
        try:
            connection.commit()
        except reads._dbapi_error as error:
            reads._abandon(connection)
            raise reads._wrapped(error, "COMMIT", None) from error
        for committed in reads._engine.dispatch.commit:
            committed(reads._engine)

    def rollback(self) -> None:
        reads, connection = self._reads, self._end()
        if connection is None:
            return
        reads._abandon(connection)
        for rolled_back in reads._engine.dispatch.rollback:
            rolled_back(reads._engine)

    def _end(self) -> Any:
        connection, self._connection = self._connection, None
        if self._reads._local.transaction is self:
            self._reads._local.transaction = None
        return connection


class ThinReads:
    """Single-statement reads on a thread-owned DB-API connection of ``engine``, in autocommit."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        #: The database's dialect, for a statement built per dialect (an INSERT's ON CONFLICT).
        self.dialect_name: str = engine.dialect.name
        #: Whether ``write_together`` sends its inserts as one statement: PostgreSQL's
        #: data-modifying WITH (idp.thin_statements ``inserts_together``); SQLite has none.
        self.inserts_in_one_statement = engine.dialect.name == "postgresql"
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._prepared: dict[_Statement, _Prepared] = {}
        self._local = _ThreadConnection()
        self._generation = 0
        # A database that only this process's pool can reach (in-memory SQLite) has no second
        # connection to read on: there, reads go through the engine as any statement does.
        url = engine.url
        self._sqlite = url.get_backend_name() == "sqlite"
        # SQLite: the write lock, waited for in turn (``begin``).
        self._send_begin: Callable[[Any, Any], Any] = begin_immediate
        if url.get_backend_name() == "postgresql":
            from idp.postgresql import begin  # psycopg, imported only when used

            self._send_begin = lambda connection, _cursor: begin(connection)
        self._through_engine = self._sqlite and (
            not url.database or url.database == ":memory:" or "mode=memory" in url.database
        )
        #: SQLite on a file: when this process checkpoints next (``checkpoint``).
        self.checkpoints = IntervalGate(
            CHECKPOINT_INTERVAL if self._sqlite and not self._through_engine else 0
        )
        event.listen(engine, "engine_disposed", self._disposed)
        # The Session's statements of this engine's requests go through this object too
        # (idp.session_statements).
        from idp.session_statements import register

        register(engine, self)

    def checkpoint(self) -> None:
        """SQLite: a PASSIVE checkpoint on the thread's own connection, which copies the pages
        committed to the WAL back into the database file as far as no reader still needs them,
        waiting for nobody (sqlite.org/pragma.html#pragma_wal_checkpoint). Called after a
        response has been sent (``checkpoints``), never inside a commit: SQLite's automatic
        checkpoint runs in the commit that crosses its threshold and makes that one request wait
        (docs/performance.md, "Checkpoints after the response"). Never raises: a checkpoint that
        cannot run now runs at the next one."""
        if self.checkpoints.interval <= 0 or self._local.transaction is not None:
            return  # not SQLite on a file, or the thread is inside a transaction of its own
        try:
            self._cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:
            logging.getLogger(__name__).warning("SQLite checkpoint failed", exc_info=True)

    def first(self, statement: Select[Any], parameters: Mapping[str, Any]) -> Row | None:
        """The statement's first row, or None (every row is read: a thin read selects few)."""
        rows = self._read(statement, parameters)
        return rows[0] if rows else None

    def all(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[Row]:
        """Every row of the statement."""
        return self._read(statement, parameters)

    def begin(self) -> ThinTransaction | None:
        """A transaction on this thread's connection (the module's docstring), or None where there
        is no connection apart from the pool's (in-memory SQLite): the caller uses its Session.
        On SQLite it is ``BEGIN IMMEDIATE``: the write lock, waited for (``busy_timeout``), before
        the first statement, so a transaction that reads then writes never fails to upgrade its
        lock (idp.database). A connection the server dropped fails at the ``BEGIN``, before
        anything of the transaction was sent: it is replaced and the ``BEGIN`` sent once more, as
        idp.postgresql's checkout does for the pooled connections."""
        if self._through_engine:
            return None
        local = self._local
        if local.transaction is not None:
            # A caller that neither committed nor rolled back: the thread must not inherit it.
            local.transaction.rollback()
            raise RuntimeError("a thin transaction was left open on this thread")
        for attempt in (1, 2):
            try:
                cursor = self._cursor()
                self._send_begin(local.dbapi_connection, cursor)
                break
            except self._dbapi_error as error:
                if not self._dropped_after(error) or attempt == 2:
                    raise self._wrapped(error, "BEGIN", None) from error
        for began in self._engine.dispatch.begin:
            began(self._engine)
        transaction = ThinTransaction(self, local.dbapi_connection, cursor)
        local.transaction = transaction
        return transaction

    def write_alone(self, statement: UpdateBase, parameters: Mapping[str, Any]) -> int:
        """Send one INSERT, UPDATE or DELETE in a transaction of its own and commit it; the number
        of rows it changed. For the one write of a request that opened no ``Session`` transaction
        (see the module's docstring). A connection the server dropped is replaced and the write
        sent once more: a dropped connection ran nothing of it, or, had the server committed it
        before the connection broke, the second INSERT of the same primary key is refused (an
        error, never a second row)."""
        if self._through_engine:
            with self._engine.begin() as connection:
                result: Any = connection.execute(statement, dict(parameters))
                return int(result.rowcount)
        return self._sent(self._send_write, statement, parameters)

    def write_alone_returning(
        self, statement: TextualSelect, parameters: Mapping[str, Any]
    ) -> list[Row]:
        """``write_alone`` for a write that returns rows (``INSERT ... RETURNING`` written as
        text with its columns): its rows, converted as a thin read's are. A dropped connection's
        write is sent once more as ``write_alone``'s is: for a count, the strict side (counted
        twice at worst, never lost)."""
        if self._through_engine:
            with self._engine.begin() as connection:
                return list(connection.execute(statement, dict(parameters)).all())
        return self._sent(self._send_write_returning, statement, parameters)

    def _send_write_returning(self, prepared: _Prepared, bound: Any) -> list[Row]:
        rows: list[Row] = self._send_write(prepared, bound, rows=True)
        return rows

    def _send_write(self, prepared: _Prepared, bound: Any, *, rows: bool = False) -> Any:
        """The rows changed, or with ``rows`` the rows returned (read before the commit)."""
        cursor = self._cursor()  # opens the thread's connection at its first statement
        connection = self._local.dbapi_connection
        # SQLite: in this writer's turn (idp.sqlite_writers).
        in_turn = (
            connection.lone_write()
            if isinstance(connection, TurnTakingConnection)
            else contextlib.nullcontext()
        )
        with in_turn:
            try:
                # Autocommit commits the write as it completes: SQLite's own transaction for a
                # lone statement (idp.database ``LONE_WRITE``: no BEGIN IMMEDIATE for it),
                # PostgreSQL's.
                answer = self._execute(
                    cursor, prepared, bound, rows=rows, context=LONE_WRITE if self._sqlite else None
                )
                if self._sqlite and connection.in_transaction:
                    connection.commit()  # a listener began a transaction after all
            except BaseException:
                if self._sqlite and connection.in_transaction:
                    with contextlib.suppress(self._dbapi_error):
                        connection.rollback()
                raise
        for committed in self._engine.dispatch.commit:
            committed(self._engine)
        return answer

    # -- the read ----------------------------------------------------------------------------------
    def _read(self, statement: Select[Any], parameters: Mapping[str, Any]) -> list[Row]:
        if self._through_engine:
            with self._engine.connect() as connection:
                result = connection.execute(statement, dict(parameters))
                return list(result.all())
        return self._sent(self._send, statement, parameters)

    def _sent(
        self,
        send: Callable[[_Prepared, Any], _Answer],
        statement: _Statement,
        parameters: Mapping[str, Any],
    ) -> _Answer:
        """``send``'s answer for the statement, its driver errors as SQLAlchemy's."""
        prepared = self._prepared.get(statement) or self._prepare(statement)
        bound = prepared.parameters(parameters)
        try:
            return send(prepared, bound)
        except self._dbapi_error as error:
            if not self._dropped_after(error):
                raise self._wrapped(error, prepared.sql, bound) from error
        # The server closed the connection (a restart, an administrator): once more on a new one.
        try:
            return send(prepared, bound)
        except self._dbapi_error as error:
            self._dropped_after(error)
            raise self._wrapped(error, prepared.sql, bound) from error

    def _send(self, prepared: _Prepared, bound: Any) -> list[Row]:
        rows: list[Row] = self._execute(self._cursor(), prepared, bound, rows=True)
        return rows

    def _in_transaction(
        self,
        cursor: Any,
        statement: _Statement,
        parameters: Mapping[str, Any],
        *,
        rows: bool,
    ) -> Any:
        """A statement of a ``ThinTransaction``: its rows, or the count of rows it changed."""
        prepared = self._prepared.get(statement) or self._prepare(statement)
        bound = prepared.parameters(parameters)
        try:
            return self._execute(cursor, prepared, bound, rows=rows)
        except self._dbapi_error as error:
            self._dropped_after(error)  # not sent again: the transaction is the caller's
            raise self._wrapped(error, prepared.sql, bound) from error

    def _execute(
        self,
        cursor: Any,
        prepared: _Prepared,
        bound: Any,
        *,
        rows: bool,
        connection: Any = None,
        context: Any = None,
    ) -> Any:
        """Send one statement on ``cursor``: its rows converted, or the count of rows it changed.
        The engine's listeners are called as a Connection calls them; the engine stands in for
        the Connection there is none of (a ``Session``'s statements name its Connection,
        idp.session_statements), and no execution context but ``context`` (``LONE_WRITE`` for a
        lone write): idp's listeners read the statement, the cursor and the context's compiled
        statement if any (idp.database)."""
        sql = prepared.sql
        dispatch = self._engine.dispatch
        conn = self._engine if connection is None else connection
        for listener in dispatch.before_cursor_execute:
            sql, bound = listener(conn, cursor, sql, bound, context, False)
        cursor.execute(sql, bound)
        # Every row, also for ``first``: SQLite ends a statement's implicit read transaction only
        # when it has stepped past the last row, and the cursor stays open for the next read.
        raw: list[Any] = cursor.fetchall() if rows else []
        changed = int(cursor.rowcount)
        for after in dispatch.after_cursor_execute:
            after(conn, cursor, sql, bound, context, False)
        if not rows:
            return changed
        if prepared.result_processors is None:
            # Read once: psycopg builds the description's column objects anew at each call.
            prepared.make_result_processors(cursor.description)
        return prepared.rows(raw) if raw else []

    def _abandon(self, connection: Any) -> None:
        """Roll back what ``connection`` holds; a connection that cannot is closed (its state
        unknown), and the thread opens a new one at its next statement."""
        if self._local.dbapi_connection is not connection:
            return  # closed already (dropped by the server)
        try:
            connection.rollback()
        except self._dbapi_error:
            self._close_thread_connection()

    def _cursor(self) -> Any:
        """This thread's cursor, on its connection (one cursor kept: psycopg makes each new one
        with an adapters map of its own)."""
        local = self._local
        if local.cursor is not None and local.generation == self._generation:
            return local.cursor
        self._close_thread_connection()
        try:
            # Opened by the pool, so the engine's ``connect`` listeners run; detached, so it holds
            # no pool slot and the pool never resets it.
            pooled = self._engine.raw_connection()
        except self._dbapi_error as error:
            raise self._wrapped(error, None, None) from error
        pooled.detach()
        dbapi_connection: Any = pooled.dbapi_connection
        # Any implicit transaction the pool's pre-ping opened ends before autocommit is set.
        dbapi_connection.rollback()
        self._dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
        local.dbapi_connection = dbapi_connection
        local.cursor = dbapi_connection.cursor()
        local.generation = self._generation
        return local.cursor

    def _dropped_after(self, error: Exception) -> bool:
        """Whether ``error`` says the connection is gone; if so it is closed and forgotten."""
        connection = self._local.dbapi_connection
        if not self._dialect.is_disconnect(error, connection, None):  # type: ignore[arg-type]
            return False
        self._close_thread_connection()
        return True

    def _close_thread_connection(self) -> None:
        connection = self._local.dbapi_connection
        self._local.dbapi_connection = self._local.cursor = None
        self._local.transaction = None
        if connection is not None:
            # Already closed by the server, it may refuse to close again: nothing left to release.
            with contextlib.suppress(self._dbapi_error):
                connection.close()

    def _disposed(self, _engine: Engine) -> None:
        # Every thread opens a new connection at its next read, as the disposed pool's users do.
        self._generation += 1

    def _wrapped(self, error: Exception, sql: str | None, bound: Any) -> Exception:
        wrapped: Exception = exc.DBAPIError.instance(
            sql,
            bound,
            error,
            self._dbapi_error,
            hide_parameters=self._engine.hide_parameters,
            connection_invalidated=self._local.dbapi_connection is None,
            dialect=self._dialect,
        )
        return wrapped

    # -- compiling, once per statement -------------------------------------------------------------
    def _prepare(self, statement: _Statement) -> _Prepared:
        prepared = compile_statement(statement, self._dialect)
        self._prepared[statement] = prepared
        return prepared
