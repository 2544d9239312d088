"""Seeing a SQLite writer wait for its turn (idp.sqlite_writers) as a state, not as a time."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from idp.extensions import db
from idp.sqlite_writers import WriterLine

_TAKE = WriterLine.take.__code__


def _taking_turn(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside ``WriterLine.take`` (its stack, read once)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code is _TAKE:
            return True
        frame = frame.f_back
    return False


def waits_for_a_lock(app: Flask, thread: threading.Thread) -> bool:
    """Whether ``thread``'s request waits for another's lock: on PostgreSQL a backend of this
    database waits on a lock; on SQLite the thread waits for its turn to write."""
    with app.app_context():
        if db.engine.dialect.name == "postgresql":
            query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND datname = current_database()")  # fmt: skip
            with db.engine.connect() as connection:
                return bool(connection.scalar(query))
    return _taking_turn(thread)


def wait_until_waiting_for_turn(thread: threading.Thread, outcome: dict[str, Any]) -> None:
    """Until ``thread`` is inside ``WriterLine.take`` (its stack, polled; no timer raced). Fails
    at once if the thread ended first (``outcome`` says how) or raised."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert "error" not in outcome, f"the waiting writer failed: {outcome['error']!r}"
        assert thread.is_alive(), f"the writer did not wait: {outcome}"
        if _taking_turn(thread):
            return
        time.sleep(0.001)
    pytest.fail(f"the writer never waited for its turn: {outcome}")
