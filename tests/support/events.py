"""Waiting for an event in another process (a server, a browser): poll until it has happened.
The deadline only fails the test when the event never comes; it is generous on purpose, so that
a slow or loaded machine makes a test slower, never red."""

from __future__ import annotations

import time
from collections.abc import Callable

#: Reaching it fails the test: long past any moment the event could still come.
EVENT_DEADLINE = 60.0


def wait_for(event: Callable[[], bool], what: str, deadline: float = EVENT_DEADLINE) -> None:
    """Poll ``event`` until it holds; fail with ``what`` if it never does."""
    give_up = time.monotonic() + deadline
    while not event():
        assert time.monotonic() < give_up, f"never happened: {what}"
        time.sleep(0.01)
