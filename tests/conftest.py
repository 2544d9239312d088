"""Shared fixtures: an app on a real database (SQLite, and PostgreSQL for storage tests)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from idp import create_app
from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import Base, InstallationSecret, SigningKey
from idp.models.base import utcnow
from idp.services.subjects import ensure_secret
from tests.support.clock import app_clock
from tests.support.node_caches import hold_node_caches

TEST_SECRET = "test-secret-key-0123456789abcdef0123456789"
#: The machine's PostgreSQL; scripts/test.sh exports it. Storage tests fail (not skip) without it.
POSTGRES_URL = os.environ.get(
    "IDP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Cheaper Argon2 parameters keep the suite fast; tests of the parameters themselves set their own.
FAST_ARGON2 = {"argon2_memory_kib": 1024, "argon2_time_cost": 1, "argon2_parallelism": 1}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files marked ``minutes(N)`` first, the longest first, the rest in their order.
    pytest-xdist hands out whole files (``--dist loadfile``) in collection order
    (``--no-loadscope-reorder``, scripts/test.sh): a file of one long test, which its default
    order (files with the most tests first) sent out last, then ran alone for minutes after
    every other file had finished; sent out first, it runs beside them."""
    items.sort(key=_minutes_first)  # stable: a file's tests stay together and in order


def _minutes_first(item: pytest.Item) -> int:
    marker = item.get_closest_marker("minutes")
    return -int(marker.args[0]) if marker is not None else 0


def app_overrides(database_url: str, instance: Path, **extra: Any) -> dict[str, Any]:
    return {
        "issuer": "http://localhost",
        "secret_key": TEST_SECRET,
        "database_url": database_url,
        "instance_path": str(instance),
        **FAST_ARGON2,
        # The passkey prompt after a password sign-in has its own tests; elsewhere it would stand
        # between every password sign-in and the relying party.
        "passkey_prompt": False,
        # Opportunistic pruning has its own tests (tests/functional/test_retention.py); elsewhere
        # it would delete the expired rows a test set up on purpose.
        "prune_interval": 0,
        **extra,
    }


@contextmanager
def throwaway_postgres_database(options: str = "") -> Iterator[str]:
    """A new, empty database on the machine's PostgreSQL, dropped afterwards; ``options`` are
    CREATE DATABASE's (a locale, say)."""
    name = f"idp_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" {options}'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A throw-away database on the machine's PostgreSQL for this test process."""
    with throwaway_postgres_database() as url:
        yield url


def _build_app(database_url: str, instance: Path, **settings: Any) -> Flask:
    """An app with ``settings`` over the test overrides, its tables created and keys generated."""
    app = create_app(app_overrides(database_url, instance, **settings))
    with app.app_context():
        Base.metadata.create_all(db.engine)
        app.extensions["idp"].keys.ensure_keys(db.session())
        ensure_secret(db.session(), utcnow())
        db.session.commit()
    return app


def sqlite_app(directory: Path, **settings: Any) -> Flask:
    """An app of its own on a new SQLite database in ``directory``, with ``settings``."""
    return _build_app(f"sqlite:///{directory / 'idp.db'}", directory, **settings)


def _empty_tables(app: Flask) -> None:
    """Delete every row but the signing keys (generating RSA keys per test is slow) and the
    installation's secrets (each process keeps the one it read, as a deployment does)."""
    with app.app_context():
        db.session.rollback()
        for table in reversed(Base.metadata.sorted_tables):
            if table.name not in (SigningKey.__tablename__, InstallationSecret.__tablename__):
                db.session.execute(table.delete())
        db.session.commit()
        db.session.remove()


@pytest.fixture(scope="session")
def _sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    instance = tmp_path_factory.mktemp("sqlite")
    return _build_app(f"sqlite:///{instance / 'idp.db'}", instance)


@pytest.fixture(scope="session")
def _postgres_app(tmp_path_factory: pytest.TempPathFactory, postgres_database_url: str) -> Flask:
    return _build_app(postgres_database_url, tmp_path_factory.mktemp("postgres"))


@pytest.fixture
def app(_sqlite_app: Flask) -> Iterator[Flask]:
    """The app on SQLite, emptied after the test."""
    yield _sqlite_app
    _empty_tables(_sqlite_app)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_app(request: pytest.FixtureRequest) -> Iterator[Flask]:
    """The app on each supported database, for storage-sensitive tests."""
    fixture_name = "_sqlite_app" if request.param == "sqlite" else "_postgres_app"
    flask_app: Flask = request.getfixturevalue(fixture_name)
    yield flask_app
    _empty_tables(flask_app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


#: The app fixtures whose caches ``node_caches_held`` holds, each one the test uses.
CACHED_APPS = ("app", "storage_app", "signup_app")


@pytest.fixture
def node_caches_held(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that counts the statements a request sends: the caches of each app it uses
    trust what they hold until the test ends (tests.support.node_caches). The apps live for the
    whole session, so a copy an earlier test filled can expire between two of this test's
    requests, and the later one then reads it again: one statement more, on a loaded machine
    only. Used by ``pytest.mark.usefixtures("node_caches_held")``."""
    for flask_app in apps_used(request, CACHED_APPS):
        hold_node_caches(monkeypatch, flask_app)


def apps_used(request: pytest.FixtureRequest, names: tuple[str, ...]) -> list[Flask]:
    """The apps of the fixtures ``names`` that the test uses."""
    return [request.getfixturevalue(name) for name in names if name in request.fixturenames]


#: The app fixtures whose clock ``clock`` freezes, each one the test uses.
CLOCKED_APPS = ("app", "storage_app")


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[FrozenClock]:
    """One frozen time, now, for the app the test uses (``app``, ``storage_app``): every view,
    the session loader and the token endpoint read it (idp.composition.clock); ``advance`` moves
    it. A module whose tests build an app of their own overrides this fixture with
    ``app_clock``."""
    apps = apps_used(request, CLOCKED_APPS)
    assert apps, f"the clock fixture freezes the clock of {CLOCKED_APPS}; the test uses none"
    frozen = FrozenClock(utcnow())
    with ExitStack() as stack:
        for flask_app in apps:
            stack.enter_context(app_clock(flask_app, frozen))
        yield frozen
