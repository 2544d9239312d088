"""The settings idp.database gives every SQLite connection, the thin reads' own included."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import text

from idp.database import WAL_CHECKPOINT_PAGES
from idp.extensions import db


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
