"""The application's clock in tests: a test freezes and moves the one clock the views read
(``app.extensions["idp.clock"]``, idp.clock) instead of patching ``utcnow`` module by module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from idp.clock import Clock, FrozenClock

__all__ = ["FrozenClock", "app_clock"]


@contextmanager
def app_clock(app: Flask, clock: Clock) -> Iterator[Clock]:
    """``app`` reads ``clock`` inside the block, the clock it had before after it (the session's
    apps outlive the test)."""
    previous = app.extensions["idp.clock"]
    app.extensions["idp.clock"] = clock
    try:
        yield clock
    finally:
        app.extensions["idp.clock"] = previous
