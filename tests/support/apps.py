"""Apps with settings of their own (a policy other than the defaults) on a real database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask

from idp import create_app
from idp.extensions import db
from idp.models import Base, SigningKey
from tests.conftest import app_overrides, throwaway_postgres_database


def build_app(database_url: str, instance: Path, **settings: Any) -> Flask:
    app = create_app(app_overrides(database_url, instance, **settings))
    with app.app_context():
        Base.metadata.create_all(db.engine)
        app.extensions["idp"].keys.ensure_keys(db.session())
        db.session.commit()
    return app


def empty_tables(app: Flask) -> None:
    """Every row but the signing keys (generating RSA keys per test is slow)."""
    with app.app_context():
        db.session.rollback()
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != SigningKey.__tablename__:
                db.session.execute(table.delete())
        db.session.commit()
        db.session.remove()


@contextmanager
def app_on(database: str, instance: Path, **settings: Any) -> Iterator[Flask]:
    """An app with ``settings`` on SQLite (``"sqlite"``) or a fresh PostgreSQL database."""
    if database == "sqlite":
        app = build_app(f"sqlite:///{instance / 'idp.db'}", instance, **settings)
        yield app
        with app.app_context():
            db.engine.dispose()
        return
    with throwaway_postgres_database() as url:
        app = build_app(url, instance, **settings)
        try:
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()
