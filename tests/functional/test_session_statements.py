"""idp.session_statements: a service's Core statements sent as thin statements on the request's
``Session`` connection stay the ``Session``'s: its rollback takes them back, its commit keeps
them, the engine's listeners see them with the ``Session``'s Connection, and an INSERT that
leaves columns to their defaults still gets them (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any, cast

from flask import Flask
from sqlalchemy import Table, bindparam, event, insert, select

from idp.extensions import db
from idp.models import AccessToken
from idp.models.base import utcnow
from idp.session_statements import SessionStatements, statements_of

_TOKENS = cast(Table, AccessToken.__table__)
_INSERT = insert(_TOKENS)
_BY_JTI = select(_TOKENS.c.client_id, _TOKENS.c.revoked_at).where(_TOKENS.c.jti == bindparam("jti"))


def _row(jti: str, **overrides: Any) -> dict[str, Any]:
    now = utcnow()
    row = {"jti": jti, "token_hash": None, "grant_id": None, "client_id": "c", "user_id": None,
           "scope": "", "issued_at": now, "expires_at": now, "revoked_at": None}  # fmt: skip
    row.update(overrides)
    return row


def _stored(app: Flask, jti: str) -> Any:
    """The row as a new session sees it: committed or not there."""
    with app.app_context():
        return db.session.execute(_BY_JTI, {"jti": jti}).first()


def test_session_statements_are_the_sessions_rolled_back_or_committed(storage_app: Flask) -> None:
    with storage_app.app_context():
        statements = statements_of(db.session)
        assert isinstance(statements, SessionStatements)  # the thin way, not Core's
        assert statements.write(_INSERT, _row("rolled-back")) == 1
        assert statements.first(_BY_JTI, {"jti": "rolled-back"}) is not None  # same transaction
        db.session.rollback()
        statements.write(_INSERT, _row("committed"))
        db.session.commit()
    assert _stored(storage_app, "rolled-back") is None
    assert _stored(storage_app, "committed") is not None


def test_the_listeners_see_the_sessions_connection(storage_app: Flask) -> None:
    seen: list[object] = []
    with storage_app.app_context():
        engine = db.engine

        def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if "access_tokens" in statement:
                seen.append(conn)

        event.listen(engine, "before_cursor_execute", record)
        try:
            statements_of(db.session).write(_INSERT, _row("listened"))
            connection = db.session.connection()
            db.session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert seen == [connection]


def test_an_insert_leaving_columns_to_their_defaults_gets_them(storage_app: Flask) -> None:
    row = _row("defaulted")
    del row["revoked_at"], row["token_hash"]  # nullable, default None
    with storage_app.app_context():
        statements_of(db.session).write(_INSERT, row)  # through Core: its count is the driver's
        db.session.commit()
    stored = _stored(storage_app, "defaulted")
    assert stored is not None
    assert stored.revoked_at is None
