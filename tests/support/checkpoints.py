"""Holding a live server's requests at a named checkpoint (idp.checkpoints), from the test.

A server started with ``IDP_TEST_CHECKPOINT_DIR`` marks each arrival at a checkpoint with a file and
waits while the checkpoint's hold file exists. Every checkpoint lets requests through until a test
holds it with ``holding``, counts the arrivals, and releases it when the block ends, whatever
happens in it. Waiting is for a condition the test observes (arrivals, finished requests), never
for an amount of time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from idp.checkpoints import CHECKPOINT_DIR_ENV

WAIT_TIMEOUT = 90.0


@dataclass
class Checkpoints:
    directory: Path

    @property
    def env(self) -> dict[str, str]:
        return {CHECKPOINT_DIR_ENV: str(self.directory)}

    def open_all(self, *names: str) -> None:
        """The directory, with ``names`` (and every other checkpoint) letting requests through:
        a checkpoint waits only while a test holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            (self.directory / f"{name}.hold").unlink(missing_ok=True)

    def arrivals(self, name: str) -> int:
        return len(list(self.directory.glob(f"{name}.*.arrived")))

    @contextmanager
    def holding(self, name: str) -> Iterator[None]:
        """Requests reaching ``name`` wait until the block ends."""
        for arrived in self.directory.glob(f"{name}.*.arrived"):
            arrived.unlink()
        (self.directory / f"{name}.hold").touch()
        try:
            yield
        finally:
            (self.directory / f"{name}.hold").unlink(missing_ok=True)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Until ``condition()`` holds; a failure (not a hang) if it never does."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)
