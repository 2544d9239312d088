"""Engine set-up and schema management (Alembic)."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

MIGRATIONS = Path(__file__).parent / "migrations"

#: A directory: each process counts the SQL statements it sends, by verb, and the transactions it
#: commits, into ``<pid>.json`` there (the benchmark's "database writes per sign-in"). A
#: diagnostic, not a setting: off unless the environment names a directory.
STATEMENT_COUNTS_ENV = "IDP_STATEMENT_COUNTS_DIR"


def configure_engine(engine: Engine) -> None:
    counts_dir = os.environ.get(STATEMENT_COUNTS_ENV)
    if counts_dir:
        count_statements(engine, Path(counts_dir))
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for the write lock in
        # WAL mode (SQLITE_BUSY_SNAPSHOT); taking it up front makes concurrent spends queue.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def count_statements(engine: Engine, directory: Path) -> None:
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    directory.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        with lock:
            counts[verb] += 1

    @event.listens_for(engine, "commit")
    def _committed(_conn: Any) -> None:
        # Written at every commit: worker processes are not always given the chance to run
        # exit handlers.
        with lock:
            counts["COMMIT"] += 1
            (directory / f"{os.getpid()}.json").write_text(json.dumps(counts))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
