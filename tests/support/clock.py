"""The application's clock in tests: a test freezes and moves the one clock the views read
(the container's ``clock``, idp.clock) instead of patching ``utcnow`` module by module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient

from idp.clock import Clock, FrozenClock
from idp.composition import container
from idp.extensions import db
from idp.models.base import utcnow
from tests.support.flow import jwt_parts

__all__ = ["FrozenClock", "app_clock", "key_unpublished"]


@contextmanager
def app_clock(app: Flask, clock: Clock) -> Iterator[Clock]:
    """``app`` reads ``clock`` inside the block, the clock it had before after it (the session's
    apps outlive the test)."""
    held = container(app)
    previous, held.clock = held.clock, clock
    try:
        yield clock
    finally:
        held.clock = previous


@contextmanager
def key_unpublished(app: Flask, browser: FlaskClient, id_token: str) -> Iterator[FrozenClock]:
    """Inside the block, two hours after a key rotation: the key that signed ``id_token`` has
    left the JWKS (checked) while the session it was issued in may live on. The frozen clock is
    the application's and the key store's; the test may move it further."""
    keys = app.extensions["idp"].keys
    frozen = FrozenClock(utcnow())
    previous, keys.clock = keys.clock, frozen
    try:
        with app_clock(app, frozen):
            with app.app_context():
                keys.rotate(db.session())
                db.session.commit()
            frozen.advance(timedelta(hours=2))
            keys.invalidate()
            kids = {key["kid"] for key in browser.get("/jwks").get_json()["keys"]}
            assert jwt_parts(id_token)[0]["kid"] not in kids
            yield frozen
    finally:
        keys.clock = previous
