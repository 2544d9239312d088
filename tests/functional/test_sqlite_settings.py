"""The settings idp.database gives every SQLite connection, the thin reads' own included."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from flask import Flask
from sqlalchemy import text

from idp.database import WAL_CHECKPOINT_PAGES
from idp.extensions import db
from tests.support.factories import create_client


def test_every_sqlite_connection_runs_wal_with_a_checkpoint_per_ten_thousand_pages(
    app: Flask,
) -> None:
    # sqlite.org/wal.html, "Checkpointing": the setting is a connection's own, so it must be set
    # on each one the pool opens, the thread-owned connections of idp.thin_reads too.
    assert WAL_CHECKPOINT_PAGES == 10_000
    with app.app_context():
        pooled = db.session.connection()
        assert pooled.execute(text("PRAGMA wal_autocheckpoint")).scalar() == WAL_CHECKPOINT_PAGES
        assert pooled.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        db.session.rollback()
        thread_owned = app.extensions["idp"].reads._cursor()
        assert thread_owned.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000
        assert thread_owned.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def _database_path(app: Flask) -> str:
    return str(app.extensions["idp"].settings.database_url.removeprefix("sqlite:///"))


def _rows_in_the_database_file(app: Flask, table: str) -> int:
    """The rows of ``table`` in the database file itself, the WAL ignored (``immutable=1``:
    sqlite.org/uri.html): what a checkpoint has copied there."""
    path = _database_path(app)
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file_only:
        count: int = file_only.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        return count


def test_the_checkpoint_after_a_response_copies_the_committed_writes_into_the_database_file(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = app.extensions["idp"].reads
    machine = create_client(app, name="m2m", grant_types=["client_credentials"])
    checkpoints: list[bool] = []
    original = reads.checkpoint

    def recorded() -> None:
        original()
        checkpoints.append(True)

    original()  # from a database file that holds everything committed so far
    monkeypatch.setattr(reads, "checkpoint", recorded)
    before = _rows_in_the_database_file(app, "access_tokens")
    client = app.test_client()
    reads.checkpoints.defer(3600)  # not due: the token's row stays in the WAL
    answer = client.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(machine.client_id, machine.client_secret),
    )
    assert answer.status_code == 200
    assert checkpoints == []
    assert _rows_in_the_database_file(app, "access_tokens") == before

    reads.checkpoints.defer(0)  # due: the next response is followed by a checkpoint
    response = client.post(
        "/token",
        data={"grant_type": "client_credentials"},
        auth=(machine.client_id, machine.client_secret),
        buffered=False,
    )
    assert response.status_code == 200
    assert checkpoints == []  # not before the response is done with
    response.close()
    assert checkpoints == [True]
    assert _rows_in_the_database_file(app, "access_tokens") == before + 2
    # Due again only after the interval.
    assert not reads.checkpoints.due()


def test_no_commit_checkpoints_before_the_wal_holds_its_threshold(app: Flask) -> None:
    # The request path leaves checkpoints to the one after a response; SQLite's own automatic
    # one, inside a commit, waits for WAL_CHECKPOINT_PAGES (the CLI's backstop).
    with app.app_context():
        pooled = db.session.connection()
        assert pooled.execute(text("PRAGMA wal_autocheckpoint")).scalar() >= 10_000
        db.session.rollback()


@pytest.mark.usefixtures("node_caches_held")
def test_a_lone_write_is_sqlite_s_own_transaction_without_begin_or_commit(app: Flask) -> None:
    # idp.database LONE_WRITE: a write sent alone in autocommit takes SQLite's write lock when it
    # starts and is committed when it completes; the BEGIN IMMEDIATE of a transaction of several
    # statements is not sent for it.
    machine = create_client(app, name="m2m", grant_types=["client_credentials"])
    browser = app.test_client()
    form = {"grant_type": "client_credentials"}
    auth = (machine.client_id, machine.client_secret)
    assert browser.post("/token", data=form, auth=auth).status_code == 200  # the cache is warm
    sent: list[str] = []
    connection = app.extensions["idp"].reads._cursor().connection
    connection.set_trace_callback(sent.append)
    try:
        granted = browser.post("/token", data=form, auth=auth)
    finally:
        connection.set_trace_callback(None)
    assert granted.status_code == 200
    verbs = [statement.split()[0].upper() for statement in sent]
    assert verbs == ["INSERT"], sent
    assert not connection.in_transaction
    # Committed: the database file's own readers (another connection) see it.
    with contextlib.closing(sqlite3.connect(_database_path(app))) as other:
        count = other.execute("SELECT count(*) FROM access_tokens").fetchone()[0]
    assert count == 2
