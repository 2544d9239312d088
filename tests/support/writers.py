"""Seeing a SQLite writer wait for its turn (idp.sqlite_writers) as a state, not as a time."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from idp.sqlite_writers import WriterLine

_TAKE = WriterLine.take.__code__


def wait_until_waiting_for_turn(thread: threading.Thread, outcome: dict[str, Any]) -> None:
    """Until ``thread`` is inside ``WriterLine.take`` (its stack, polled; no timer raced). Fails
    at once if the thread ended first (``outcome`` says how) or raised."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert "error" not in outcome, f"the waiting writer failed: {outcome['error']!r}"
        assert thread.is_alive(), f"the writer did not wait: {outcome}"
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            if frame.f_code is _TAKE:
                return
            frame = frame.f_back
        time.sleep(0.001)
    pytest.fail(f"the writer never waited for its turn: {outcome}")
