"""Thin reads (idp/thin_reads.py): the bearer-token lookup on the thread's own DB-API connection,
outside the ORM, keeping what the engine gives every statement (docs/performance.md): the
types' conversions, the engine's statement listeners, SQLAlchemy's exceptions for driver errors
(an outage is a 503), and no request failing on a connection the database dropped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pyotp
import pytest
from flask import Flask
from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from idp.database import is_outage
from idp.extensions import db
from idp.models import AccessToken
from idp.models.base import utcnow
from idp.services.crypto import token_hash
from idp.services.tokens import _BY_HASH
from idp.thin_reads import ThinReads
from tests.conftest import _empty_tables
from tests.functional.test_round_trips import PASSWORD, _post_password, _user_with_totp
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, shown_address
from tests.support.node_caches import hold_node_caches


def _reads(app: Flask) -> ThinReads:
    reads = app.extensions["idp"].reads
    assert isinstance(reads, ThinReads)
    return reads


def _access_token(app: Flask) -> tuple[RelyingParty, str]:
    rp = RelyingParty(app.test_client(), create_client(app))
    token = rp.tokens_for(create_user(app), scope="openid profile email")["access_token"]
    return rp, token


def test_a_thin_read_returns_the_row_the_engine_returns_aware_timestamps_included(
    storage_app: Flask,
) -> None:
    _, token = _access_token(storage_app)
    digest = {"digest": token_hash(token)}
    thin = _reads(storage_app).first(_BY_HASH, digest)
    with storage_app.app_context():
        through_engine = db.session.execute(_BY_HASH, digest).one()
        db.session.rollback()
    assert thin is not None
    assert tuple(thin) == tuple(through_engine)
    assert thin._fields == tuple(through_engine._fields)
    # UTCDateTime's result processor ran: SQLite keeps no zone, the row's timestamps have one.
    assert thin.issued_at.utcoffset() is not None
    assert thin.expires_at.utcoffset() is not None
    assert isinstance(thin.email_verified, bool)
    assert _reads(storage_app).first(_BY_HASH, {"digest": token_hash("unknown")}) is None


def test_the_engine_s_statement_listeners_see_each_thin_read(storage_app: Flask) -> None:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    with storage_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        _reads(storage_app).first(_BY_HASH, {"digest": token_hash("a.b.c")})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(sent) == 1
    assert "access_tokens.token_hash" in sent[0]


def test_a_driver_error_is_sqlalchemy_s_and_hides_the_parameters(storage_app: Flask) -> None:
    missing = Table("no_such_table", MetaData(), Column("value", String))
    statement = select(missing.c.value).where(missing.c.value == bindparam("value"))
    with pytest.raises(sa_exc.DBAPIError) as raised:
        _reads(storage_app).first(statement, {"value": "a-secret-value"})
    assert "a-secret-value" not in str(raised.value)
    # The class the engine raises for the same statement, so is_outage decides alike (SQLite
    # calls a missing table an OperationalError, PostgreSQL a ProgrammingError).
    with storage_app.app_context():
        with pytest.raises(sa_exc.DBAPIError) as through_engine:
            db.session.execute(statement, {"value": "a-secret-value"})
        db.session.rollback()
    assert type(raised.value) is type(through_engine.value)
    assert is_outage(raised.value) == is_outage(through_engine.value)
    # The connection is in autocommit: the failed statement left no aborted transaction behind.
    _, token = _access_token(storage_app)
    assert _reads(storage_app).first(_BY_HASH, {"digest": token_hash(token)}) is not None


def _sessions_opened(monkeypatch: pytest.MonkeyPatch, app: Flask) -> list[object]:
    """The ORM Sessions the scoped session makes from now on (until the monkeypatch undoes it).
    The node's caches that the test filled are held until it ends (tests.support.node_caches)."""
    hold_node_caches(monkeypatch, app)
    opened: list[object] = []
    registry = db.session.registry
    create = registry.createfunc

    def counting() -> Any:
        session = create()
        opened.append(session)
        return session

    monkeypatch.setattr(registry, "createfunc", counting)
    return opened


def test_userinfo_and_introspection_open_no_orm_session(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    rp, token = _access_token(app)
    secret = rp.registered.client_secret
    assert secret is not None
    auth = (rp.registered.client_id, secret)
    assert rp.browser.post("/introspect", data={"token": token}, auth=auth).status_code == 200
    opened = _sessions_opened(monkeypatch, app)
    assert rp.userinfo(token).status_code == 200
    introspected = rp.browser.post("/introspect", data={"token": token}, auth=auth)
    assert introspected.get_json()["active"] is True
    assert opened == []


@pytest.fixture
def postgres_app(_postgres_app: Flask) -> Iterator[Flask]:
    yield _postgres_app
    _empty_tables(_postgres_app)


def test_userinfo_answers_after_the_database_ended_the_thread_s_connection(
    postgres_app: Flask,
) -> None:
    """What ``pool_pre_ping`` gives pooled connections: after a restart, no request fails on a
    stale connection. The thin read's connection is ended by the server
    (``pg_terminate_backend``, as a restart or an administrator would), and the next userinfo
    sends its read again on a new connection."""
    rp, token = _access_token(postgres_app)
    with postgres_app.app_context():
        engine = db.engine
    # The backend of this read's connection, and no other: the test process's other apps on
    # the same database may keep connections that sent the same statement.
    backends: list[int] = []

    def backend(_conn: Any, cursor: Any, *_args: Any) -> None:
        backends.append(cursor.connection.info.backend_pid)

    event.listen(engine, "before_cursor_execute", backend)
    try:
        assert rp.userinfo(token).status_code == 200  # the thread's connection is open now
    finally:
        event.remove(engine, "before_cursor_execute", backend)
    assert len(backends) == 1
    admin = create_engine(engine.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": backends[0]}
            ).all()
    finally:
        admin.dispose()
    assert ended == [(True,)]

    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        answer = rp.userinfo(token)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert answer.status_code == 200, answer.text
    assert len(sent) == 2  # sent on the ended connection, then once more on a new one


def test_after_the_engine_is_disposed_the_thread_reads_on_a_new_connection(
    storage_app: Flask,
) -> None:
    """``Engine.dispose`` (a setting that applies to new connections, a fork) reaches the thin
    reads' connections too."""
    used: list[object] = []

    def record(_conn: Any, cursor: Any, *_args: Any) -> None:
        used.append(cursor.connection)

    reads = _reads(storage_app)
    digest = {"digest": token_hash("a.b.c")}
    with storage_app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        reads.first(_BY_HASH, digest)
        reads.first(_BY_HASH, digest)
        engine.dispose()
        reads.first(_BY_HASH, digest)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert used[0] is used[1]
    assert used[2] is not used[1]


def test_a_client_credentials_token_is_committed_alone_without_an_orm_session(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With its client cached, a client-credentials grant's one write (its access token, RFC 6749
    4.4.3) is sent by ``write_alone`` and committed on its own: another connection sees the row,
    the bearer endpoints find it, and no ORM Session was opened for it."""
    machine = create_client(storage_app, name="m2m", grant_types=["client_credentials"])
    assert machine.client_secret is not None
    auth = (machine.client_id, machine.client_secret)
    browser = storage_app.test_client()
    form = {"grant_type": "client_credentials"}
    assert browser.post("/token", data=form, auth=auth).status_code == 200  # the cache is warm
    opened = _sessions_opened(monkeypatch, storage_app)
    granted = browser.post("/token", data=form, auth=auth)
    assert granted.status_code == 200, granted.text
    assert "refresh_token" not in granted.get_json()
    assert opened == []
    monkeypatch.undo()
    token = granted.get_json()["access_token"]
    # Committed: the request's own connection is not the one reading it here.
    with storage_app.app_context():
        row = db.session.execute(
            text("SELECT client_id FROM access_tokens WHERE token_hash = :digest"),
            {"digest": token_hash(token)},
        ).one()
        db.session.rollback()
    assert row.client_id == machine.client_id
    introspected = browser.post("/introspect", data={"token": token}, auth=auth)
    assert introspected.get_json()["active"] is True


@pytest.mark.usefixtures("node_caches_held")
def test_a_password_and_totp_sign_in_counts_alone_and_shows_its_second_step_without_a_session(
    storage_app: Flask,
) -> None:
    """Each attempt's count is sent by ``write_alone_returning`` (the engine, not a Session's
    connection, runs it) and committed before the check (docs/security.md); the second-step page
    reads its partial sign-in as a thin read and opens no ORM Session. The node's caches are held
    for the whole test: a sign-in policy read again through the Session after 5 s on a loaded
    machine would open its transaction first, and the count would rightly join it."""
    email, secret = _user_with_totp(storage_app)
    engine = _reads(storage_app)._engine
    counted_by: list[object] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ATTEMPT_COUNTERS"):
            counted_by.append(conn)

    event.listen(engine, "before_cursor_execute", record)
    try:
        browser = storage_app.test_client()
        assert shown_address(_post_password(browser, email, PASSWORD)) == "/login/second-step"
        with pytest.MonkeyPatch.context() as spy:  # the page again (a reload)
            opened = _sessions_opened(spy, storage_app)
            page = browser.get("/login/second-step")
            assert page.status_code == 200
            assert opened == []
        form = {"csrf_token": csrf_token(page.text), "code": pyotp.TOTP(secret).now()}
        assert browser.post("/login/second-step", data=form).status_code == 302
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert counted_by == [engine, engine]


# -- the thin transaction (ThinReads.begin): a refresh token's rotation ----------------------------
_ACCESS_TOKENS = cast(Table, AccessToken.__table__)
_INSERT = insert(_ACCESS_TOKENS)
_BY_JTI = select(_ACCESS_TOKENS.c.client_id).where(_ACCESS_TOKENS.c.jti == bindparam("jti"))


def _row(jti: str) -> dict[str, Any]:
    now = utcnow()
    return {"jti": jti, "token_hash": None, "grant_id": None, "client_id": "c", "user_id": None,
            "scope": "", "issued_at": now, "expires_at": now, "revoked_at": None}  # fmt: skip


def _stored(app: Flask, jti: str) -> bool:
    """Whether another connection (the Session's) sees the row: committed."""
    with app.app_context():
        found = db.session.execute(_BY_JTI, {"jti": jti}).first()
        db.session.rollback()
    return found is not None


@contextmanager
def _engine_events(app: Flask) -> Iterator[list[str]]:
    """The engine's statement, begin, commit and rollback events while the block runs."""
    seen: list[str] = []
    with app.app_context():
        engine = db.engine
    listeners = {
        "before_cursor_execute": lambda _c, _cur, statement, *_a: seen.append(statement.split()[0]),
        "begin": lambda _c: seen.append("begin"),
        "commit": lambda _c: seen.append("commit"),
        "rollback": lambda _c: seen.append("rollback"),
    }
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        yield seen
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)


def test_a_thin_transaction_commits_its_statements_together_and_the_listeners_see_them(
    storage_app: Flask,
) -> None:
    reads = _reads(storage_app)
    with _engine_events(storage_app) as seen:
        transaction = reads.begin()
        assert transaction is not None
        assert transaction.open
        assert transaction.write(_INSERT, _row("one")) == 1
        assert transaction.first(_BY_JTI, {"jti": "one"}) is not None  # its own write, seen
        assert transaction.write(_INSERT, _row("two")) == 1
        sent = list(seen)
    assert not _stored(storage_app, "one")  # not committed yet
    with _engine_events(storage_app) as seen:
        transaction.commit()
        transaction.commit()  # ended: nothing more
    assert not transaction.open
    assert _stored(storage_app, "one")
    assert _stored(storage_app, "two")
    # BEGIN and COMMIT are not statements of the counts (as a Session's are not).
    assert sent + seen == ["begin", "INSERT", "SELECT", "INSERT", "commit"]


def test_a_thin_transaction_that_failed_is_rolled_back_and_the_connection_serves_on(
    storage_app: Flask,
) -> None:
    reads = _reads(storage_app)
    with _engine_events(storage_app) as seen:
        transaction = reads.begin()
        assert transaction is not None
        transaction.write(_INSERT, _row("kept-back"))
        with pytest.raises(sa_exc.IntegrityError):
            transaction.write(_INSERT, _row("kept-back"))  # the same primary key: refused
        transaction.rollback()
    assert seen == ["begin", "INSERT", "INSERT", "rollback"]
    assert not _stored(storage_app, "kept-back")
    # The thread's connection is in autocommit again, with no transaction left open.
    assert reads.first(_BY_JTI, {"jti": "kept-back"}) is None
    again = reads.begin()
    assert again is not None
    again.write(_INSERT, _row("kept-back"))
    again.commit()
    assert _stored(storage_app, "kept-back")


def test_a_thin_transaction_left_open_is_rolled_back_before_the_thread_begins_another(
    storage_app: Flask,
) -> None:
    reads = _reads(storage_app)
    left = reads.begin()
    assert left is not None
    left.write(_INSERT, _row("left-open"))
    with pytest.raises(RuntimeError):
        reads.begin()
    assert not left.open
    assert not _stored(storage_app, "left-open")
    transaction = reads.begin()
    assert transaction is not None
    transaction.rollback()


def test_a_refresh_rotates_in_a_thin_transaction_without_an_orm_session(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/performance.md, "Refresh with rotation": with its client cached, the usual rotation
    opens no ORM Session, and what it wrote is committed together (the successor works). A
    replay still goes through the Session and revokes the family (RFC 9700 4.14.2)."""
    rp, _ = _access_token(storage_app)
    tokens = rp.tokens_for(create_user(storage_app, email="second@example.com"))
    opened = _sessions_opened(monkeypatch, storage_app)
    with _engine_events(storage_app) as seen:
        rotated = rp.refresh(tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    assert opened == []
    # The new tokens' two INSERTs: one statement on PostgreSQL (its data-modifying WITH,
    # idp.thin_statements ``inserts_together``).
    with storage_app.app_context():
        together = db.engine.dialect.name == "postgresql"
    inserts = ["WITH"] if together else ["INSERT", "INSERT"]
    assert seen == ["begin", "UPDATE", *inserts, "commit"]
    successor = rotated.get_json()["refresh_token"]
    used = rp.refresh(successor)
    assert used.status_code == 200, used.text
    assert opened == []
    replayed = rp.refresh(tokens["refresh_token"])
    assert replayed.get_json()["error"] == "invalid_grant"
    assert len(opened) == 1  # the replay's revocation
    assert rp.refresh(used.get_json()["refresh_token"]).get_json()["error"] == "invalid_grant"


@pytest.mark.usefixtures("node_caches_held")
def test_a_refresh_request_without_a_token_to_spend_takes_no_transaction(
    storage_app: Flask,
) -> None:
    """The rotation's transaction (on SQLite, the one write lock) is opened for a token that can
    be one, just before its spend: not for a request that names none, or a value too long."""
    rp, _ = _access_token(storage_app)
    with _engine_events(storage_app) as seen:
        missing = rp.token({"grant_type": "refresh_token"})
        too_long = rp.refresh("x" * 201)
    assert missing.get_json()["error"] == "invalid_request"
    assert too_long.get_json()["error"] == "invalid_grant"
    assert seen == []


def _backend_of_thread(app: Flask) -> int:
    transaction = _reads(app).begin()
    assert transaction is not None
    row = transaction.first(select(func.pg_backend_pid().label("pid")), {})
    transaction.rollback()
    assert row is not None
    return int(row.pid)


def _terminate(app: Flask, pid: int) -> None:
    with app.app_context():
        url = db.engine.url
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            assert ended.scalar() is True
    finally:
        admin.dispose()


def test_a_thin_transaction_begins_on_a_new_connection_when_the_database_ended_the_old(
    postgres_app: Flask,
) -> None:
    """Nothing of the transaction was sent yet: the BEGIN fails on the ended connection and is
    sent once more on a new one, as a pooled checkout's is (idp.postgresql)."""
    old = _backend_of_thread(postgres_app)
    _terminate(postgres_app, old)
    with _engine_events(postgres_app) as seen:
        transaction = _reads(postgres_app).begin()
        assert transaction is not None
        row = transaction.first(select(func.pg_backend_pid().label("pid")), {})
        transaction.write(_INSERT, _row("after-restart"))
        transaction.commit()
    assert row is not None
    assert row.pid != old
    assert seen == ["begin", "SELECT", "INSERT", "commit"]
    assert _stored(postgres_app, "after-restart")


def test_a_thin_transaction_sends_nothing_again_once_a_statement_was_sent(
    postgres_app: Flask,
) -> None:
    """Once the transaction sent a statement, a dropped connection took it along: the error is
    the caller's (an outage, a 503), never the rest of the transaction on a new connection."""
    reads = _reads(postgres_app)
    transaction = reads.begin()
    assert transaction is not None
    pid = transaction.first(select(func.pg_backend_pid().label("pid")), {})
    assert pid is not None
    _terminate(postgres_app, int(pid.pid))
    with _engine_events(postgres_app) as seen:
        with pytest.raises(sa_exc.DBAPIError) as raised:
            transaction.write(_INSERT, _row("lost"))
        transaction.rollback()
    assert is_outage(raised.value)
    assert seen == ["INSERT", "rollback"]  # sent once
    assert not _stored(postgres_app, "lost")
    # The thread opens a new connection at its next statement.
    assert reads.first(_BY_JTI, {"jti": "lost"}) is None
