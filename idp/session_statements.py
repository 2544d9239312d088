"""The Core statements of a request's ``Session`` transaction, sent as thin statements on the
DB-API connection that transaction holds (idp.thin_reads).

Services write their hot statements as SQLAlchemy Core built once and send them in the request's
``Session`` transaction (a passkey sign-in's credential record, session, grant and code; the spends
of pending requests and codes). Through ``Connection.execute`` each one pays for a Core execution
context and a result object around a statement that takes less than they do (docs/performance.md,
"Before and after, per change"). ``statements_of(session).first`` and ``.write`` send the same
statement on the same connection, in the same transaction, as ``ThinReads`` sends its own: one
compiled form per dialect, the column types' conversions, the engine's statement listeners (the
statement counts; idp.database's ``BEGIN IMMEDIATE`` on SQLite, taken at the first write as
before) and driver errors as SQLAlchemy's exceptions. The ``Session`` still owns the transaction:
its commit commits them, its rollback takes them back.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, exc
from sqlalchemy.orm import scoped_session
from sqlalchemy.sql.dml import UpdateBase

from idp.thin_statements import Inserts, Row, inserts_together
from idp.thin_statements import Statement as _Statement

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads


class SessionStatements:
    """Statements of the request's ``Session`` transaction, sent on the DB-API connection that
    transaction holds, as a thin statement is sent (``statements_of``): one compiled form
    per dialect, the types' conversions, the engine's statement listeners (idp.database's
    ``BEGIN IMMEDIATE`` on SQLite among them) and SQLAlchemy's exceptions, without a Core
    execution context and result per statement. They are the ``Session``'s: its commit commits
    them, its rollback takes them back. A connection found dropped is invalidated, so the pool
    does not hand it out again."""

    __slots__ = ("_reads", "_session")

    def __init__(self, reads: ThinReads, session: Any) -> None:
        self._reads, self._session = reads, session

    @property
    def joins_writes(self) -> bool:
        """Whether writes to several tables can go as one statement of data-modifying ``WITH``
        clauses (PostgreSQL); SQLite has none."""
        return self._reads.inserts_in_one_statement

    def first(self, statement: _Statement, parameters: Mapping[str, Any]) -> Row | None:
        """The first row a SELECT or a write's RETURNING gives, or None."""
        rows = self._send(statement, parameters, rows=True)
        return rows[0] if rows else None

    def all(self, statement: _Statement, parameters: Mapping[str, Any]) -> list[Row]:
        """Every row a SELECT or a write's RETURNING gives."""
        rows: list[Row] = self._send(statement, parameters, rows=True)
        return rows

    def write(self, statement: UpdateBase, parameters: Mapping[str, Any]) -> int:
        """Send an INSERT, UPDATE or DELETE; the number of rows it changed."""
        changed: int = self._send(statement, parameters, rows=False)
        return changed

    def inserted(self, built: Mapping[str, Any], parameters: Mapping[str, Any]) -> bool:
        """Send this engine's form of an insert the key decides (idp.thin_statements
        ``insert_unless_exists``, with ``returning``): whether this call inserted the row."""
        return self.first(built[self._reads.dialect_name], parameters) is not None

    def write_together(self, parts: Sequence[Inserts]) -> None:
        """Insert ``parts`` in their order: one statement on PostgreSQL, one per part on SQLite
        (idp.thin_statements ``inserts_together``)."""
        one = self._reads.inserts_in_one_statement
        for statement, parameters in inserts_together(parts, one_statement=one):
            self._send(statement, parameters, rows=False)

    def _send(self, statement: _Statement, parameters: Mapping[str, Any], *, rows: bool) -> Any:
        reads, session = self._reads, self._session
        transaction = session.get_transaction()
        kept = session.info.get(_SESSION_CURSOR)
        # The Connection a Session transaction holds is the same for the transaction's life: asked
        # of the Session once per transaction (the first statement begins it), not per statement.
        # A transaction that a failed flush deactivated is asked again, and the Session refuses.
        if (
            kept is None
            or transaction is None
            or kept[0] is not transaction
            or not transaction.is_active
        ):
            connection = session.connection()  # begins the Session's transaction if need be
            dbapi_connection = connection.connection.dbapi_connection
            cursor = kept[3] if kept and kept[2] is dbapi_connection else dbapi_connection.cursor()
            kept = (session.get_transaction(), connection, dbapi_connection, cursor)
            session.info[_SESSION_CURSOR] = kept
        _, connection, dbapi_connection, cursor = kept
        prepared = reads._prepared.get(statement) or reads._prepare(statement)
        try:
            bound = prepared.parameters(parameters)
        except KeyError:
            # An INSERT that leaves columns to their SQLAlchemy defaults: Core fills them in (the
            # count is then the driver's; -1 for psycopg's INSERT ... RETURNING of the key).
            result = connection.execute(statement, dict(parameters))
            return list(result.all()) if rows else int(result.rowcount)
        try:
            return reads._execute(cursor, prepared, bound, rows=rows, connection=connection)
        except reads._dbapi_error as error:
            dropped = reads._dialect.is_disconnect(error, dbapi_connection, cursor)  # type: ignore[arg-type]
            if dropped:
                connection.invalidate()
            raise exc.DBAPIError.instance(
                prepared.sql, bound, error, reads._dbapi_error,
                hide_parameters=reads._engine.hide_parameters,
                connection_invalidated=dropped, dialect=reads._dialect,
            ) from error  # fmt: skip


#: Where a ``Session`` keeps the cursor of ``SessionStatements``: (the Session transaction, its
#: Connection, the DB-API connection, the cursor on it).
_SESSION_CURSOR = "idp.thin_cursor"
#: Each engine's ``ThinReads`` (one per application), for ``statements_of``.
_BY_ENGINE: weakref.WeakKeyDictionary[Engine, ThinReads] = weakref.WeakKeyDictionary()


class _CoreStatements:
    """``SessionStatements``' methods through the ``Session``'s Core connection, for an
    engine without ``ThinReads`` (a service used outside an application)."""

    __slots__ = ("_session",)

    #: Each write is sent by itself (``SessionStatements.joins_writes``).
    joins_writes = False

    def __init__(self, session: Any) -> None:
        self._session = session

    def first(self, statement: _Statement, parameters: Mapping[str, Any]) -> Any:
        return self._session.connection().execute(statement, dict(parameters)).first()

    def all(self, statement: _Statement, parameters: Mapping[str, Any]) -> list[Any]:
        return list(self._session.connection().execute(statement, dict(parameters)).all())

    def inserted(self, built: Mapping[str, Any], parameters: Mapping[str, Any]) -> bool:
        statement = built[self._session.connection().dialect.name]
        return self.first(statement, parameters) is not None

    def write(self, statement: UpdateBase, parameters: Mapping[str, Any]) -> int:
        return int(self._session.connection().execute(statement, dict(parameters)).rowcount)

    def write_together(self, parts: Sequence[Inserts]) -> None:
        for statement, parameters in inserts_together(parts, one_statement=False):
            self.write(statement, parameters)


def statements_of(session: Any) -> SessionStatements | _CoreStatements:
    """How a service sends its Core statements in ``session``'s transaction: as thin statements
    on the transaction's own connection when the engine has ``ThinReads`` (docs/performance.md,
    "Before and after, per change"), else through the ``Session``'s Core connection."""
    if isinstance(session, scoped_session):
        session = session()  # the request's Session, whose ``info`` keeps what is found here
    info = session.info
    found: SessionStatements | _CoreStatements | None = info.get(_STATEMENTS)
    if found is None:
        reads = _BY_ENGINE.get(session.get_bind())
        found = SessionStatements(reads, session) if reads else _CoreStatements(session)
        info[_STATEMENTS] = found
    return found


_STATEMENTS = "idp.session_statements"


def register(engine: Engine, reads: ThinReads) -> None:
    """``reads`` sends the statements of ``engine``'s sessions (``ThinReads`` registers itself)."""
    _BY_ENGINE[engine] = reads
