"""Engine set-up and schema management (Alembic)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, make_url

from idp import sqlite_writers

MIGRATIONS = Path(__file__).parent / "migrations"

#: A directory: each process counts the SQL statements it sends, by verb, and the transactions it
#: commits, into ``<pid>.json`` there (the benchmark's "database writes per sign-in"). A
#: diagnostic, not a setting: off unless the environment names a directory.
STATEMENT_COUNTS_ENV = "IDP_STATEMENT_COUNTS_DIR"

#: SQLite: WAL pages between automatic checkpoints (SQLite's default is 1,000; see
#: ``configure_engine``).
WAL_CHECKPOINT_PAGES = 10_000

#: SQLite: how long a writer waits for the write lock before "database is locked".
BUSY_TIMEOUT_SECONDS = 30

#: PostgreSQL: how long libpq waits for a connection, from the TCP handshake to the server's
#: "ready for query" (its ``connect_timeout``, whose default is to wait forever). A server host
#: that hangs, or drops packets, would otherwise hold the request's thread as long as it does
#: (each thread of each worker in turn) where a 503 with ``Retry-After`` belongs (RFC 9110
#: 15.6.4). A ``connect_timeout`` in ``database_url`` wins over it.
POSTGRESQL_CONNECT_TIMEOUT_SECONDS = 5

#: PostgreSQL: how a connection that was established finds out the server is gone when nothing
#: tells it (the host vanished, a failover moved the address, a partition black-holes packets;
#: docs/operations.md, "PostgreSQL stopped, and back"). Without them a statement waits for its
#: answer until the kernel gives up: about 15 minutes of retransmissions for a statement not
#: acknowledged, and for one acknowledged and then never answered, two hours before the first
#: keepalive probe. libpq's parameters (its "Parameter Key Words"), each of them local to this
#: side (no server, pooler or proxy sees them); a value in ``database_url`` wins over it:
#: - ``tcp_user_timeout``: milliseconds sent data may stay unacknowledged;
#: - ``keepalives_idle``, ``keepalives_interval``, ``keepalives_count``: a probe after this many
#:   idle seconds, again every ``interval``, the connection dead after ``count`` unanswered
#:   (a statement waiting for a long query's answer is kept: the server's kernel answers them).
#: A dead connection fails its statement (a 503, idp.unavailable) or its checkout's ``BEGIN``
#: (a new connection is made, idp.postgresql).
POSTGRESQL_TCP_USER_TIMEOUT_MS = 30_000
POSTGRESQL_KEEPALIVES_IDLE_SECONDS = 10
POSTGRESQL_KEEPALIVES_INTERVAL_SECONDS = 5
POSTGRESQL_KEEPALIVES_COUNT = 3


def engine_options(url: str) -> dict[str, Any]:
    """The engine's connection arguments for ``url``: SQLite's lock wait, PostgreSQL's connect
    timeout and dead-peer detection (both for the application's engine and the migrations')."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": BUSY_TIMEOUT_SECONDS, "check_same_thread": False}}
    if parsed.get_backend_name() != "postgresql":
        return {}
    defaults = {
        "connect_timeout": POSTGRESQL_CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": POSTGRESQL_KEEPALIVES_IDLE_SECONDS,
        "keepalives_interval": POSTGRESQL_KEEPALIVES_INTERVAL_SECONDS,
        "keepalives_count": POSTGRESQL_KEEPALIVES_COUNT,
        "tcp_user_timeout": POSTGRESQL_TCP_USER_TIMEOUT_MS,
    }
    # Connection arguments would override the URL's query (SQLAlchemy): leave out what it sets.
    return {"connect_args": {k: v for k, v in defaults.items() if k not in parsed.query}}


#: SQLSTATEs of a server that answers but cannot take the request now: a read-only transaction
#: (25006: a replica after a failover, or ``default_transaction_read_only``). Connection failures
#: (class 08), insufficient resources (53: disk full, too many connections) and operator
#: intervention (57: shutdown) arrive as ``OperationalError`` already.
_UNAVAILABLE_SQLSTATES = ("25006",)


def is_outage(error: BaseException) -> bool:
    """The error says a storage dependency is unavailable (the database unreachable, shutting
    down, full or read-only; Redis unreachable), not that the request or the code is wrong: worth
    a 503 and a retry later, not a 500."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy import exc

    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.DisconnectionError):
        return True
    if isinstance(error, exc.TimeoutError | RedisConnectionError | RedisTimeoutError):
        return True  # the connection pool's wait, or Redis not answering
    if isinstance(error, exc.DBAPIError):
        return getattr(error.orig, "sqlstate", None) in _UNAVAILABLE_SQLSTATES
    return False


def describe_failure(engine: Engine, error: BaseException) -> str | None:
    """What a command that failed on the database tells its operator, in one line, or None when
    the failure is neither a schema behind this idp's nor an outage (a bug: its traceback stays).

    SQLite answers a database never initialised with "no such table", an ``OperationalError``
    like an outage's; so the schema is looked at first, and an outage is what is left. The
    driver's first line says what failed (refused, authentication, locked, disk full): libpq and
    SQLite name the host and port or the file, never a password."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception:  # it does not answer: the outage below is the story
        current = None
    if current is not None:
        scripts = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False)))
        heads = set(scripts.get_heads())
        try:
            known = all(scripts.get_revision(revision) is not None for revision in current)
        except CommandError:
            known = False
        if not current:
            return "the database has no idp schema yet: run `idp init` first"
        if known and current != heads:
            return "the database's schema is older than this idp's: run `idp init` to upgrade it"
    if not is_outage(error):
        return None
    original = getattr(error, "orig", None) or error
    reason = (str(original).strip().splitlines() or [""])[0]
    return f"the database is unavailable ({type(original).__name__}: {reason})"


def create_private_sqlite_file(url: str) -> None:
    """Create a SQLite database file that does not exist yet readable by its owner alone (0600),
    before SQLite creates it with the process umask (0644 under the usual 022): it holds live
    secrets (the outbox keeps unsent invite and login links, docs/configuration.md
    ``smtp_url``), and SQLite gives its -wal and -shm files the database file's permissions. A
    file that exists keeps the permissions its operator gave it."""
    parsed = make_url(url)
    database = parsed.database or ""
    # A URI filename ("file:...") is opened as its URI says.
    if not parsed.drivername.startswith("sqlite") or database in ("", ":memory:"):
        return
    if database.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def configure_engine(engine: Engine) -> None:
    counts_dir = os.environ.get(STATEMENT_COUNTS_ENV)
    if counts_dir:
        count_statements(engine, Path(counts_dir))
    if engine.dialect.name == "postgresql":
        from idp.postgresql import configure_postgresql  # psycopg, imported only when used

        configure_postgresql(engine)
    if engine.dialect.name != "sqlite":
        return

    # idp's writers take turns (idp.sqlite_writers) instead of polling SQLite's lock.
    factory = sqlite_writers.connection_factory(engine.url.database, BUSY_TIMEOUT_SECONDS)
    if factory is not None:

        @event.listens_for(engine, "do_connect")
        def _turn_taking_connections(_dialect: Any, _record: Any, _args: Any, kwargs: Any) -> None:
            kwargs["factory"] = factory

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling off: the hook below decides when BEGIN is sent.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable enough in WAL mode, much faster
        # A checkpoint copies every page changed since the last one back into the database file
        # (sqlite.org/wal.html, "Checkpointing"). Every write rewrites the same few pages (a
        # table's last leaf, its indexes' upper levels), so one checkpoint per 10,000 WAL pages
        # instead of SQLite's default 1,000 copies each of them back a tenth as often: a
        # committed write cost about a quarter less CPU (docs/performance.md). The WAL file grows
        # to about 40 MB between checkpoints and is reused after each.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
        cursor.close()

    @event.listens_for(engine, "before_cursor_execute")
    def _write_lock_before_first_write(
        _conn: Any, cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        # SQLite has one writer at a time. A deferred transaction that reads and then writes
        # cannot wait for the write lock in WAL mode (SQLITE_BUSY_SNAPSHOT), so the lock is taken
        # with BEGIN IMMEDIATE, which waits (busy_timeout) and makes concurrent spends queue. It
        # is taken at the first write (or SELECT ... FOR UPDATE, which SQLite cannot express),
        # not at the first statement: reads before it run on their own, each seeing the newest
        # committed data, as under PostgreSQL's READ COMMITTED where idp's rules are the same
        # (every spend is one conditional UPDATE whose row count decides). Read-only requests
        # then never queue behind writers, and a writer holds the lock only from its first write.
        if context is LONE_WRITE or cursor.connection.in_transaction:
            return
        if statement.lstrip()[:9].upper().startswith(_SQLITE_WRITES) or _locks_rows(context):
            sqlite_writers.begin_immediate(cursor.connection, cursor)


class _LoneWrite:
    """The execution context idp.thin_reads names for a write it sends alone, in autocommit."""


#: SQLite runs a write sent in autocommit as a transaction of its own: the statement takes the
#: write lock when it starts, before it reads anything (its program's first step), and waits for
#: it as ``busy_timeout`` says, so the conflict BEGIN IMMEDIATE guards a multi-statement
#: transaction against (a snapshot read before the lock) cannot arise in it
#: (sqlite.org/lang_transaction.html, "Transactions", and sqlite.org/wal.html). Such a write
#: needs neither a BEGIN nor a COMMIT: two calls into SQLite fewer, each of which lets another
#: thread take the GIL (idp.thin_reads ``ThinReads.write_alone``).
LONE_WRITE = _LoneWrite()


_SQLITE_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "CREATE", "DROP", "ALTER")


def _locks_rows(context: Any) -> bool:
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    return getattr(statement, "_for_update_arg", None) is not None


def count_statements(engine: Engine, directory: Path) -> None:
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    directory.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        if verb == "WITH" and "INSERT INTO" in statement.upper():
            # Inserts sent together (idp.thin_statements): one INSERT statement, several tables.
            verb = "INSERT"
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


#: A migration's file: its revision, four digits, then its name (``0029_password_versions.py``).
MIGRATION_FILE = re.compile(r"(?P<revision>\d{4})_\w+\.py")


def newest_revision() -> str:
    """The newest migration's revision, read off the file names: revisions are numbered in
    order, each one's ``down_revision`` the one before (tests/unit/test_migration_files.py
    holds every file to that, and this to Alembic's own head)."""
    return max(
        found["revision"]
        for path in (MIGRATIONS / "versions").iterdir()
        if (found := MIGRATION_FILE.fullmatch(path.name))
    )


def schema_revision(url: str) -> str | None:
    """The revision the database's schema is at (Alembic's ``alembic_version``); None before
    the first migration."""
    from sqlalchemy import create_engine, exc, text

    engine = create_engine(url, **engine_options(url))
    try:
        with engine.connect() as connection:
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (exc.OperationalError, exc.ProgrammingError):
        return None  # no alembic_version table: nothing was migrated yet
    finally:
        engine.dispose()
    return str(revision) if revision is not None else None


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (a SQLite database made first, its owner's).
    A schema already at the newest is read in one query: Alembic, which loads every migration to
    find its head, is started only when there is something to do (every ``idp serve`` and
    ``idp init`` starts here)."""
    create_private_sqlite_file(url)
    if schema_revision(url) == newest_revision():
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")
