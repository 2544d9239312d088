"""idp.session_statements: a service's Core statements sent as thin statements on the request's
``Session`` connection stay the ``Session``'s: its rollback takes them back, its commit keeps
them, the engine's listeners see them with the ``Session``'s Connection, and an INSERT that
leaves columns to their defaults still gets them (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any, cast

from flask import Flask
from sqlalchemy import Table, bindparam, event, insert, select

from idp.extensions import db
from idp.models import AccessToken, AuditEvent
from idp.models.base import utcnow
from idp.services import audit
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


def test_held_and_written_audit_rows_go_in_one_insert_with_their_types(storage_app: Flask) -> None:
    """idp.services.audit: a held row and the next written one share one thin INSERT, and each
    row's parameters are converted by its column's type (JSON details, an aware timestamp)."""
    inserts: list[str] = []
    with storage_app.app_context():
        engine = db.engine

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("INSERT INTO audit_events"):
                inserts.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            audit.hold(db.session(), "test.held", subject_id="u1", nested={"a": [1, 2]})
            audit.write(db.session(), "test.written", client_id="c1", count=3)
            db.session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", record)
        rows = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind.in_(["test.held", "test.written"]))
            .order_by(AuditEvent.id)
        ).all()  # fmt: skip
        assert len(inserts) == 1, inserts
        assert [(r.kind, r.subject_id, r.client_id) for r in rows] == [
            ("test.held", "u1", None), ("test.written", None, "c1"),
        ]  # fmt: skip
        assert [r.details for r in rows] == [{"nested": {"a": [1, 2]}}, {"count": 3}]
        assert all(r.at.tzinfo is not None for r in rows)
