"""Seeing a SQLite writer wait for its turn (idp.sqlite_writers) as a state, not as a time."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from idp.extensions import db
from idp.sqlite_writers import WriterLine
from tests.support.checkpoints import WAIT_TIMEOUT, Checkpoints, in_thread, wait_until

#: A stuck race fails instead of hanging; never a timing claim.
RACE_LIMIT = 60.0

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


def race_held(
    app: Flask,
    checkpoints: Checkpoints,
    checkpoint: str,
    held: tuple[str, Callable[[], Any]],
    racing: tuple[str, Callable[[], Any]],
) -> dict[str, Any]:
    """Two requests raced with no timer: ``held`` sent in a thread of its own and held at
    ``checkpoint`` once it arrived there, then ``racing`` sent beside it until it finished or
    waits for a lock (``waits_for_a_lock``); the hold released, both finished, neither raised.
    Their answers by name."""
    (held_name, held_act), (racing_name, racing_act) = held, racing
    outcome: dict[str, Any] = {}
    with checkpoints.holding(checkpoint):
        first = in_thread(outcome, held_name, held_act)
        wait_until(lambda: checkpoints.arrivals(checkpoint) >= 1 or not first.is_alive(),
                   f"the {held_name} reached {checkpoint}")  # fmt: skip
        assert first.is_alive(), outcome
        second = in_thread(outcome, racing_name, racing_act)
        wait_until(lambda: not second.is_alive() or waits_for_a_lock(app, second),
                   f"the {racing_name} finished or waits for a lock")  # fmt: skip
    for thread in (first, second):
        thread.join(RACE_LIMIT)
        assert not thread.is_alive(), outcome
    assert f"{held_name} error" not in outcome, outcome
    assert f"{racing_name} error" not in outcome, outcome
    return outcome


def held_together(
    app: Flask, checkpoints: Checkpoints, first: Callable[[], Any], second: Callable[[], Any],
    at: str,
) -> tuple[Any, Any]:  # fmt: skip
    """Two requests at once, never raced by a sleep: ``first`` held at checkpoint ``at``; then
    ``second`` until it reached ``at`` too or waits for the first's lock (PostgreSQL's row lock,
    SQLite's turn to write); then both go on. Their answers, neither of which raised."""
    outcome: dict[str, Any] = {}
    deadline = time.monotonic() + WAIT_TIMEOUT
    with checkpoints.holding(at):
        one = in_thread(outcome, "first", first)
        while checkpoints.arrivals(at) < 1:
            assert one.is_alive(), outcome
            assert time.monotonic() < deadline, f"the first request never reached {at}"
            time.sleep(0.01)
        two = in_thread(outcome, "second", second)
        while checkpoints.arrivals(at) < 2 and not waits_for_a_lock(app, two):
            assert two.is_alive(), outcome
            assert time.monotonic() < deadline, (
                f"the second request neither reached {at} nor waited"
            )
            time.sleep(0.01)
    for thread in (one, two):
        thread.join(WAIT_TIMEOUT)
        assert not thread.is_alive()
    assert "first error" not in outcome, outcome
    assert "second error" not in outcome, outcome
    return outcome["first"], outcome["second"]
