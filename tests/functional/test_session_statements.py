"""idp.session_statements: a service's Core statements sent as thin statements on the request's
``Session`` connection stay the ``Session``'s: its rollback takes them back, its commit keeps
them, the engine's listeners see them with the ``Session``'s Connection, and an INSERT that
leaves columns to their defaults still gets them (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from flask import Flask
from sqlalchemy import Table, bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError

from idp.extensions import db
from idp.models import AccessToken, AuditEvent, AuthorizationCode, Grant
from idp.models.base import utcnow
from idp.services import audit
from idp.session_statements import SessionStatements, statements_of
from idp.thin_statements import Inserts, inserts_together
from tests.support.factories import create_client, create_user

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


def _grant(grant_id: str, user_id: str, client_id: str) -> dict[str, Any]:
    now = utcnow()
    return {"id": grant_id, "created_at": now, "revoked_at": None, "revoked_reason": None,
            "user_id": user_id, "client_id": client_id, "scope": "openid", "sid": "s",
            "auth_time": now, "amr": ["hwk", "user"], "acr": "phr"}  # fmt: skip


def _code(code_hash: str, grant_id: str, client_id: str) -> dict[str, Any]:
    return {"code_hash": code_hash, "grant_id": grant_id, "client_id": client_id,
            "redirect_uri": "https://rp.example/cb", "scope": "openid", "nonce": None,
            "code_challenge": None, "code_challenge_method": None, "expires_at": utcnow(),
            "consumed_at": None}  # fmt: skip


def test_inserts_together_are_one_statement_on_postgresql_and_keep_every_row(
    storage_app: Flask,
) -> None:
    """idp.thin_statements ``inserts_together``: a grant, the code that names it (its foreign
    key, checked at the statement's end) and an audit row go in one statement of data-modifying
    WITH clauses on PostgreSQL, one statement each on SQLite; every row is stored with its
    JSON and its aware timestamps either way, and the rollback takes them all back."""
    user_id = create_user(storage_app).id
    client_id = create_client(storage_app).client_id
    sent: list[str] = []
    with storage_app.app_context():
        engine = db.engine
        together = engine.dialect.name == "postgresql"

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            sent.append(statement.split(None, 1)[0])

        event.listen(engine, "before_cursor_execute", record)
        try:
            parts = [
                Inserts(Grant.__table__, (_grant("g-kept", user_id, client_id),)),
                Inserts(AuthorizationCode.__table__, (_code("c-kept", "g-kept", client_id),)),
                Inserts(AuditEvent.__table__, (
                    {"at": utcnow(), "kind": "together.one", "outcome": "success",
                     "actor_id": None, "subject_id": None, "client_id": client_id, "ip_address": "",
                     "user_agent": "", "details": {"n": 1}},
                )),
            ]  # fmt: skip
            statements_of(db.session).write_together(parts)
            db.session.commit()
            statements_of(db.session).write_together(
                [Inserts(Grant.__table__, (_grant("g-gone", user_id, client_id),))]
            )
            db.session.rollback()
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert sent == (["WITH"] if together else ["INSERT", "INSERT", "INSERT"]) + ["INSERT"]
        grant = db.session.get(Grant, "g-kept")
        assert grant is not None
        assert grant.amr == ["hwk", "user"]
        assert grant.created_at.tzinfo is not None
        code = db.session.get(AuthorizationCode, "c-kept")
        assert code is not None
        assert code.grant_id == "g-kept"
        event_row = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "together.one")
        ).one()
        assert event_row.details == {"n": 1}
        assert db.session.get(Grant, "g-gone") is None


def test_inserts_together_fail_as_one_statement(storage_app: Flask) -> None:
    """A code naming no grant fails its foreign key: on PostgreSQL the grant of the same
    statement is not kept either; on SQLite the failed statement is the code's alone, and the
    rollback takes the grant back."""
    user_id = create_user(storage_app).id
    client_id = create_client(storage_app).client_id
    with storage_app.app_context():
        parts = [
            Inserts(Grant.__table__, (_grant("g-half", user_id, client_id),)),
            Inserts(AuthorizationCode.__table__, (_code("c-orphan", "no-such-grant", client_id),)),
        ]
        with pytest.raises(IntegrityError):
            statements_of(db.session).write_together(parts)
        db.session.rollback()
        assert db.session.get(Grant, "g-half") is None


def test_inserts_together_refuse_rows_that_leave_a_python_default_unset() -> None:
    """A column with a Python-side default (``at`` of an audit row) has no value a thin
    statement could bind: the rows must name it."""
    with pytest.raises(ValueError, match="at"):
        inserts_together([Inserts(AuditEvent.__table__, ({"kind": "k"},))], one_statement=False)
