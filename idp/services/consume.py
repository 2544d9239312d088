"""The one consume-once primitive for every secret that is spent once.

Codes, refresh tokens, pending requests, WebAuthn challenges, login links, TOTP steps and backup
codes are all spent here: a single ``UPDATE ... SET consumed_at = now WHERE <it> AND consumed_at IS
NULL`` whose row count says whether this caller won. The database serialises concurrent updates of
one row, so of N parallel attempts exactly one sees a row count of 1 (docs/architecture.md,
"Invariants").
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, Update, bindparam, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from idp.session_statements import statements_of


def consume_once(
    db: Session,
    model: Any,
    *criteria: ColumnElement[bool],
    now: datetime,
    column: str = "consumed_at",
) -> bool:
    """Mark the row matching ``criteria`` consumed; True only for the one caller that did it.
    ``column``: the timestamp that marks the spend, for a row that holds two secrets spent at
    different moments (a device authorization's user code, then its device code)."""
    marker = getattr(model, column)
    result = db.execute(
        update(model)
        .where(*criteria, marker.is_(None))
        .values({column: now})
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def consume_once_returning(
    db: Session,
    model: Any,
    *criteria: ColumnElement[bool],
    now: datetime,
    columns: Iterable[Any],
) -> Row[Any] | None:
    """``consume_once`` for a caller that needs the row it spent: the same single UPDATE, with
    ``RETURNING`` (PostgreSQL; SQLite since 3.35) giving the spent row's ``columns`` back, or None
    to every caller but the one that spent it. One round trip instead of an UPDATE and a SELECT."""
    return db.execute(
        update(model)
        .where(*criteria, model.consumed_at.is_(None))
        .values(consumed_at=now)
        .returning(*columns)
        .execution_options(synchronize_session=False)
    ).first()


def consume_once_statement(
    table: Table, *criteria: ColumnElement[bool], columns: Iterable[Any]
) -> Update:
    """``consume_once_returning``'s UPDATE built once, for a hot path (the refresh grant): the
    same single conditional UPDATE, its ``criteria`` written with bind parameters and the spend's
    time left as the ``spent_at`` parameter. SQLAlchemy then reuses its compiled form instead of
    building and keying a statement per request. Run it with ``consume_prepared``."""
    return (
        update(table)
        .where(*criteria, table.c.consumed_at.is_(None))
        .values(consumed_at=bindparam("spent_at"))
        .returning(*columns)
    )


def consume_prepared(
    db: Session, statement: Update, *, now: datetime, **params: Any
) -> Row[Any] | None:
    """Run a ``consume_once_statement`` on the session's connection (its transaction, as Core:
    nothing to synchronise with the ORM): the spent row's columns, or None to every caller but
    the one that spent it."""
    return statements_of(db).first(statement, {"spent_at": now, **params})
