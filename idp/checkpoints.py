"""Test-only checkpoints: hold a request at a named point until the test lets it go.

Tests of concurrency rules (docs/security.md) must hold requests in flight with an event the test
controls, never with a sleep or a slow hash. A live server started with ``IDP_TEST_CHECKPOINT_DIR``
naming a directory marks each arrival at a checkpoint with a file there
(``<name>.<unique>.arrived``) and waits until ``<name>.release`` exists; the test counts the
arrivals and creates the release file. Without the variable (every real deployment) a checkpoint
does nothing.
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
    release = folder / f"{name}.release"
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
