"""The application's clock in tests: a test freezes and moves the one clock the views read
(the container's ``clock``, idp.clock) instead of patching ``utcnow`` module by module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

from idp.clock import Clock, FrozenClock
from idp.composition import container

__all__ = ["FrozenClock", "app_clock"]


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
