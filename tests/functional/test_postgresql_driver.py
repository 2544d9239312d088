"""The engine's psycopg connections on PostgreSQL (idp/postgresql.py): a checkout's BEGIN is its
liveness check and no pre-ping is sent, a transaction after a commit in the same checkout is
still a transaction, and cursor descriptions built on demand describe what psycopg's do. That no
request fails on a stale connection is tests/functional/test_outages.py's."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from flask import Flask
from psycopg import pq
from sqlalchemy import text
from sqlalchemy.exc import InvalidatePoolError

from idp.extensions import db
from idp.postgresql import DescribedOnDemandCursor, begin_or_reconnect


@pytest.fixture
def app(_postgres_app: Flask) -> Flask:
    return _postgres_app


def test_a_checkout_begins_its_transaction_and_sends_no_ping(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        engine = db.engine
    pings: list[Any] = []
    monkeypatch.setattr(engine.dialect, "do_ping", pings.append)
    engine.dispose()  # fresh connections skip a pre-ping: check a pooled one
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    with engine.connect() as connection:
        dbapi_connection: Any = connection.connection.dbapi_connection
        # Open before any statement: psycopg sends no BEGIN of its own for the first one.
        assert dbapi_connection.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    assert pings == []


def test_after_a_commit_in_one_checkout_the_next_statements_are_a_transaction_again(
    app: Flask,
) -> None:
    with app.app_context():
        engine = db.engine
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.commit()
        # psycopg's own BEGIN now: both statements are undone by the rollback.
        connection.execute(text("CREATE TEMPORARY TABLE undone (x integer)"))
        connection.execute(text("INSERT INTO undone VALUES (1)"))
        connection.rollback()
        assert connection.execute(text("SELECT to_regclass('pg_temp.undone')")).scalar() is None


def test_a_description_built_on_demand_is_psycopgs(postgres_database_url: str) -> None:
    conninfo = postgres_database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as connection:
        query = "SELECT 1 AS one, 'a'::text AS letter, now() AS at"
        plain = connection.cursor()
        plain.execute(query)
        on_demand = DescribedOnDemandCursor(connection)
        on_demand.execute(query)
        assert on_demand.description is not None
        assert plain.description is not None
        described = [(c.name, c.type_code) for c in on_demand.description]
        assert described == [(c.name, c.type_code) for c in plain.description]
        assert len(on_demand.description) == 3
        assert on_demand.description[1].name == "letter"

        on_demand.execute("CREATE TEMPORARY TABLE described (x integer)")
        assert on_demand.description is None  # no rows: no description, as psycopg's

        on_demand.execute(query)
        unread = on_demand.description
        on_demand.execute("SELECT 2 AS two")
        with pytest.raises(psycopg.InterfaceError):  # never describes another result
            list(unread or [])


def test_a_connection_known_to_be_broken_is_replaced_without_a_round_trip(
    postgres_database_url: str,
) -> None:
    conninfo = postgres_database_url.replace("postgresql+psycopg://", "postgresql://")
    connection = psycopg.connect(conninfo)
    connection.close()  # libpq's transaction status is now UNKNOWN
    with pytest.raises(InvalidatePoolError):  # the pool discards it and connects anew
        begin_or_reconnect(connection)
