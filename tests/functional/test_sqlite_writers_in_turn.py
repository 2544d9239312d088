"""idp's own SQLite writers take turns (idp.sqlite_writers) on every path that writes: a lone
write of a request (a client-credentials grant's token), a ``Session`` transaction and a thin
transaction (a refresh token's rotation) wait for the writer before them to end instead of
polling SQLite's lock.

The waiting connections are opened with SQLite's ``busy_timeout`` at 0 (``BUSY_TIMEOUT_SECONDS``
patched before they exist): a writer that took no turn would be told "database is locked" at
once. The holder commits only once the waiter is seen inside ``WriterLine.take``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text, update

from idp import database, sqlite_writers
from idp.extensions import db
from idp.models import SigningKey
from tests.conftest import sqlite_app
from tests.support.factories import create_client
from tests.support.writers import wait_until_waiting_for_turn


@pytest.fixture
def own_app(tmp_path: Path) -> Flask:
    return sqlite_app(tmp_path)


def _while_another_writer_holds_the_lock(app: Flask, write: Callable[[], object]) -> dict[str, Any]:
    """Run ``write`` in a thread of its own while a pooled connection of the app's engine is
    inside a write transaction (its turn taken); that transaction commits once the thread is
    seen waiting for its turn. What ``write`` returned, or the error it raised."""
    with app.app_context():
        pooled = db.engine.raw_connection()
    holder = pooled.dbapi_connection
    assert isinstance(holder, sqlite_writers.TurnTakingConnection)
    cursor = holder.cursor()
    sqlite_writers.begin_immediate(holder, cursor)
    cursor.execute("UPDATE signing_keys SET kid = kid")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = write()
        except Exception as error:  # the test reads it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until_waiting_for_turn(thread, outcome)
    finally:
        holder.commit()
        pooled.close()
    thread.join(timeout=30)
    return outcome


def test_a_lone_write_waits_for_its_turn_a_client_credentials_grant_s_token(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = create_client(own_app, name="m2m", grant_types=["client_credentials"])

    def grant() -> int:
        answer = own_app.test_client().post(
            "/token",
            data={"grant_type": "client_credentials"},
            auth=(machine.client_id, machine.client_secret),
        )
        return answer.status_code

    # The first grant reads its client into the process's cache; the next one opens no Session
    # and writes its token alone, in autocommit (idp.services.issued_tokens
    # record_access_token_alone).
    assert grant() == 200
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)  # the request thread's connection
    assert _while_another_writer_holds_the_lock(own_app, grant) == {"answer": 200}


def test_a_session_transaction_waits_for_its_turn_at_its_first_write(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pool's next connection: the holder takes its only idle one.
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)

    def write() -> str:
        with own_app.app_context():
            db.session.execute(text("UPDATE signing_keys SET kid = kid"))
            db.session.commit()
        return "committed"

    assert _while_another_writer_holds_the_lock(own_app, write) == {"answer": "committed"}


def test_a_thin_transaction_waits_for_its_turn_at_its_begin(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)  # the writing thread's connection

    def write() -> str:
        # A refresh token's rotation is such a transaction (idp.thin_reads ``begin``).
        transaction = own_app.extensions["idp"].reads.begin()
        keys = SigningKey.__table__
        transaction.write(update(keys).values(kid=keys.c.kid), {})
        transaction.commit()
        return "committed"

    assert _while_another_writer_holds_the_lock(own_app, write) == {"answer": "committed"}
