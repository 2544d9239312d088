"""Thin reads (idp/thin_reads.py): the bearer-token lookup on the thread's own DB-API connection,
outside the ORM, keeping what the engine gives every statement (docs/performance.md): the
types' conversions, the engine's statement listeners, SQLAlchemy's exceptions for driver errors
(an outage is a 503), and no request failing on a connection the database dropped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from idp.database import is_outage
from idp.extensions import db
from idp.services.crypto import token_hash
from idp.services.tokens import _BY_HASH
from idp.thin_reads import ThinReads
from tests.conftest import _empty_tables
from tests.functional.test_round_trips import PASSWORD, _post_password, _user_with_totp
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, csrf_token


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


def _sessions_opened(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The ORM Sessions the scoped session makes from now on (until the monkeypatch undoes it)."""
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
    opened = _sessions_opened(monkeypatch)
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
    assert rp.userinfo(token).status_code == 200  # the thread's connection is open now
    with postgres_app.app_context():
        url = db.engine.url
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query LIKE '%access_tokens.token_hash%'"
                )
            ).all()
    finally:
        admin.dispose()
    assert ended == [(True,)]

    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    with postgres_app.app_context():
        engine = db.engine
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
    opened = _sessions_opened(monkeypatch)
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


def test_a_password_and_totp_sign_in_counts_alone_and_shows_its_second_step_without_a_session(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt's count is sent by ``write_alone_returning`` (the engine, not a Session's
    connection, runs it) and committed before the check (docs/security.md); the second-step page
    reads its partial sign-in as a thin read and opens no ORM Session."""
    email, secret = _user_with_totp(storage_app)
    engine = _reads(storage_app)._engine
    counted_by: list[object] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO ATTEMPT_COUNTERS"):
            counted_by.append(conn)

    event.listen(engine, "before_cursor_execute", record)
    try:
        browser = storage_app.test_client()
        assert _post_password(browser, email, PASSWORD).headers["Location"].endswith("second-step")
        opened = _sessions_opened(monkeypatch)
        page = browser.get("/login/second-step")
        assert page.status_code == 200
        assert opened == []
        monkeypatch.undo()
        form = {"csrf_token": csrf_token(page.text), "code": pyotp.TOTP(secret).now()}
        assert browser.post("/login/second-step", data=form).status_code == 302
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert counted_by == [engine, engine]
