"""idp's own SQLite writers take turns (idp.sqlite_writers) on every path that writes: a lone
write of a request (a client-credentials grant's token) and a ``Session`` transaction wait for
the writer before them to end instead of polling SQLite's lock.

The waiting connections are opened with SQLite's ``busy_timeout`` at 0 (``BUSY_TIMEOUT_SECONDS``
patched before they exist): a writer that took no turn would be told "database is locked" at
once. The holder commits only once the waiter is seen inside ``WriterLine.take``."""

from __future__ import annotations

import sys
import threading
import time
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

TAKE = sqlite_writers.WriterLine.take.__code__


@pytest.fixture
def own_app(tmp_path: Path) -> Flask:
    return sqlite_app(tmp_path)


def _holding_the_write_lock(app: Flask) -> Any:
    """A pooled connection of the app's engine inside a write transaction (its turn taken)."""
    with app.app_context():
        pooled = db.engine.raw_connection()
    connection = pooled.dbapi_connection
    assert isinstance(connection, sqlite_writers.TurnTakingConnection)
    cursor = connection.cursor()
    sqlite_writers.begin_immediate(connection, cursor)
    cursor.execute("UPDATE signing_keys SET kid = kid")
    return pooled


def _wait_until_waiting_for_turn(thread: threading.Thread, outcome: dict[str, Any]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert "error" not in outcome, f"the waiting writer failed: {outcome['error']!r}"
        assert thread.is_alive(), f"the writer did not wait: {outcome}"
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            if frame.f_code is TAKE:
                return
            frame = frame.f_back
        time.sleep(0.001)
    pytest.fail(f"the request never waited for its turn: {outcome}")


def test_a_lone_write_waits_for_its_turn_a_client_credentials_grant_s_token(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = create_client(own_app, name="m2m", grant_types=["client_credentials"])

    def grant(outcome: dict[str, Any]) -> None:
        try:
            answer = own_app.test_client().post(
                "/token",
                data={"grant_type": "client_credentials"},
                auth=(machine.client_id, machine.client_secret),
            )
            outcome["status"] = answer.status_code
        except Exception as error:  # the test reads it
            outcome["error"] = error

    # The first grant reads its client into the process's cache; the next one opens no Session
    # and writes its token alone, in autocommit (idp.services.grants record_access_token_alone).
    warm: dict[str, Any] = {}
    grant(warm)
    assert warm == {"status": 200}
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)  # the request thread's connection
    holder = _holding_the_write_lock(own_app)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=grant, args=(outcome,))
    thread.start()
    try:
        _wait_until_waiting_for_turn(thread, outcome)
    finally:
        holder.dbapi_connection.commit()
        holder.close()
    thread.join(timeout=30)
    assert outcome == {"status": 200}


def test_a_session_transaction_waits_for_its_turn_at_its_first_write(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)  # the pool's next connection
    holder = _holding_the_write_lock(own_app)  # the pool's only idle connection, taken
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            with own_app.app_context():
                db.session.execute(text("UPDATE signing_keys SET kid = kid"))
                db.session.commit()
                outcome["committed"] = True
        except Exception as error:  # the test reads it
            outcome["error"] = error

    thread = threading.Thread(target=write)
    thread.start()
    try:
        _wait_until_waiting_for_turn(thread, outcome)
    finally:
        holder.dbapi_connection.commit()
        holder.close()
    thread.join(timeout=30)
    assert outcome == {"committed": True}


def test_a_thin_transaction_waits_for_its_turn_at_its_begin(
    own_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_SECONDS", 0)  # the writing thread's connection
    holder = _holding_the_write_lock(own_app)
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            # A refresh token's rotation is such a transaction (idp.thin_reads ``begin``).
            transaction = own_app.extensions["idp"].reads.begin()
            keys = SigningKey.__table__
            transaction.write(update(keys).values(kid=keys.c.kid), {})
            transaction.commit()
            outcome["committed"] = True
        except Exception as error:  # the test reads it
            outcome["error"] = error

    thread = threading.Thread(target=write)
    thread.start()
    try:
        _wait_until_waiting_for_turn(thread, outcome)
    finally:
        holder.dbapi_connection.commit()
        holder.close()
    thread.join(timeout=30)
    assert outcome == {"committed": True}
