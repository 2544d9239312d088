"""Test-only checkpoints: hold a request at a named point until the test lets it go.

Tests of concurrency rules (docs/security.md) must hold requests in flight with an event the test
controls, never with a sleep or a slow hash. A live server started with ``IDP_TEST_CHECKPOINT_DIR``
naming a directory marks each arrival at a checkpoint with a file there
(``<name>.<unique>.arrived``) and, while ``<name>.hold`` exists, waits; the test creates the hold
file, counts the arrivals and removes it. A checkpoint nobody holds lets every request through,
so a checkpoint added to a path is no obstacle to the tests that do not hold it. Without the
variable (every real deployment) a checkpoint does nothing.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

CHECKPOINT_DIR_ENV = "IDP_TEST_CHECKPOINT_DIR"
#: A test that forgets to release must not hold a server's worker for ever.
HOLD_LIMIT_SECONDS = 120.0
_POLL_SECONDS = 0.01


def reached(name: str) -> None:
    """Mark an arrival at checkpoint ``name`` and wait for its release (tests only)."""
    directory = os.environ.get(CHECKPOINT_DIR_ENV)
    if not directory:
        return
    folder = Path(directory)
    (folder / f"{name}.{uuid.uuid4().hex}.arrived").touch()
    hold = folder / f"{name}.hold"
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
