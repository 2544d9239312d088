"""Apps with settings of their own (a policy other than the defaults) on a real database, and live
servers on one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask

from idp import create_app
from idp.extensions import db
from tests.conftest import _build_app, app_overrides, throwaway_postgres_database
from tests.support.live import LiveIdp, start_live_idp


@contextmanager
def app_on(database: str, instance: Path, **settings: Any) -> Iterator[Flask]:
    """An app with ``settings`` on SQLite (``"sqlite"``) or a fresh PostgreSQL database."""
    if database == "sqlite":
        app = _build_app(f"sqlite:///{instance / 'idp.db'}", instance, **settings)
        yield app
        with app.app_context():
            db.engine.dispose()
        return
    with throwaway_postgres_database() as url:
        app = _build_app(url, instance, **settings)
        try:
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()


@contextmanager
def live_on(database: str, directory: Path, **options: Any) -> Iterator[LiveIdp]:
    """``start_live_idp`` with ``options`` on SQLite (``"sqlite"``) or a fresh PostgreSQL
    database."""
    if database == "sqlite":
        with start_live_idp(directory, **options) as idp:
            yield idp
        return
    with (
        throwaway_postgres_database() as url,
        start_live_idp(directory, database_url=url, **options) as idp,
    ):
        yield idp


@contextmanager
def app_of(live: LiveIdp, instance: Path) -> Iterator[Flask]:
    """An app on a live server's database with its secret key: it derives the same keys (the
    counters' email keys, say), to read and set up what the server stores."""
    flask_app = create_app(
        app_overrides(live.env["IDP_DATABASE_URL"], instance, secret_key=live.env["IDP_SECRET_KEY"])
    )
    try:
        yield flask_app
    finally:
        with flask_app.app_context():
            db.session.remove()
            db.engine.dispose()
