"""The consume-once primitive: a secret is spent by exactly one caller, even under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, bindparam, create_engine, select
from sqlalchemy.orm import Session

from idp.database import configure_engine
from idp.models import AuthorizationCode, Base, Client, Grant, User
from idp.models.base import utcnow
from idp.services.consume import consume_once, consume_once_statement, consume_prepared
from idp.services.crypto import token_hash

THREADS = 20


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite file database configured as the application configures it (WAL, BEGIN
    IMMEDIATE, busy timeout)."""
    engine = create_engine(
        f"sqlite:///{tmp_path / 'consume.db'}",
        connect_args={"timeout": 30, "check_same_thread": False},
        pool_size=THREADS,
    )
    configure_engine(engine)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def add_code(db: Session, code: str) -> str:
    """An authorization code row (with the user, client and grant it needs); returns its hash."""
    now = utcnow()
    user = User(email=f"{code}@example.com")
    client = Client(client_id=f"client-{code}", name="RP", token_endpoint_auth_method="none")
    db.add_all([user, client])
    db.flush()
    grant = Grant(
        user_id=user.id,
        client_id=client.client_id,
        scope="openid",
        auth_time=now,
        amr=["pwd"],
        acr="urn:idp:acr:password",
    )
    db.add(grant)
    db.flush()
    digest = token_hash(code)
    db.add(
        AuthorizationCode(
            code_hash=digest,
            grant_id=grant.id,
            client_id=client.client_id,
            redirect_uri="https://rp.example/cb",
            scope="openid",
            expires_at=now + timedelta(seconds=60),
        )
    )
    db.commit()
    return digest


def spend(engine: Engine, digest: str) -> bool:
    with Session(engine) as db:
        won = consume_once(
            db, AuthorizationCode, AuthorizationCode.code_hash == digest, now=utcnow()
        )
        db.commit()
        return won


def test_consume_once_succeeds_once_then_fails(engine: Engine) -> None:
    with Session(engine) as db:
        digest = add_code(db, "code-a")
    assert spend(engine, digest) is True
    assert spend(engine, digest) is False
    assert spend(engine, digest) is False


def test_consume_once_records_when_the_secret_was_spent(engine: Engine) -> None:
    with Session(engine) as db:
        digest = add_code(db, "code-a")
    spent_at = utcnow()
    with Session(engine) as db:
        assert consume_once(
            db, AuthorizationCode, AuthorizationCode.code_hash == digest, now=spent_at
        )
        db.commit()
        assert db.scalar(select(AuthorizationCode.consumed_at)) == spent_at


def test_consume_once_of_an_unknown_secret_fails(engine: Engine) -> None:
    assert spend(engine, token_hash("never issued")) is False


def test_consume_once_spends_only_the_matching_row(engine: Engine) -> None:
    with Session(engine) as db:
        first = add_code(db, "code-a")
        second = add_code(db, "code-b")
    assert spend(engine, first) is True
    assert spend(engine, second) is True  # spending one secret leaves the others alone
    assert spend(engine, second) is False


def test_consume_once_rolled_back_leaves_the_secret_unspent(engine: Engine) -> None:
    with Session(engine) as db:
        digest = add_code(db, "code-a")
    with Session(engine) as db:
        assert consume_once(
            db, AuthorizationCode, AuthorizationCode.code_hash == digest, now=utcnow()
        )
        db.rollback()
    assert spend(engine, digest) is True


def test_parallel_spends_of_one_code_have_exactly_one_winner(engine: Engine) -> None:
    with Session(engine) as db:
        digest = add_code(db, "code-a")
    start = threading.Barrier(THREADS)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def attempt() -> None:
        try:
            with Session(engine) as db:
                start.wait()
                won = consume_once(
                    db, AuthorizationCode, AuthorizationCode.code_hash == digest, now=utcnow()
                )
                db.commit()
            with lock:
                results.append(won)
        except BaseException as error:  # reported below: a thread's failure must fail the test
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=attempt) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == THREADS
    assert results.count(True) == 1


def test_a_prepared_spend_returns_the_row_to_one_of_parallel_callers(engine: Engine) -> None:
    """``consume_once_statement`` (built once, the refresh grant's form): the same rule, and
    the spent row's columns go to the one caller that spent it."""
    codes = AuthorizationCode.__table__
    statement = consume_once_statement(
        codes, codes.c.code_hash == bindparam("digest"), columns=[codes.c.grant_id]
    )
    with Session(engine) as db:
        digest = add_code(db, "code-a")
    start = threading.Barrier(THREADS, timeout=60)
    results: list[object] = []
    lock = threading.Lock()

    def attempt() -> None:
        with Session(engine) as db:
            start.wait()
            row = consume_prepared(db, statement, now=utcnow(), digest=digest)
            db.commit()
        with lock:
            results.append(row)

    threads = [threading.Thread(target=attempt) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = [row for row in results if row is not None]
    assert len(results) == THREADS
    assert len(spent) == 1
    with Session(engine) as db:
        assert spent[0].grant_id == db.scalar(select(AuthorizationCode.grant_id))
        assert consume_prepared(db, statement, now=utcnow(), digest=digest) is None
