"""Holding a live server's requests at a named checkpoint (idp.checkpoints), from the test.

A server started with ``IDP_TEST_CHECKPOINT_DIR`` marks each arrival at a checkpoint with a file and
waits while the checkpoint's hold file exists. Every checkpoint lets requests through until a test
holds it with ``holding``, counts the arrivals, and releases it when the block ends, whatever
happens in it. Waiting is for a condition the test observes (arrivals, finished requests), never
for an amount of time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def in_thread(outcome: dict[str, Any], name: str, act: Callable[[], Any]) -> threading.Thread:
    """``act`` started in a thread of its own, a request the test then holds or races: its answer
    lands in ``outcome[name]``, or what it raised in ``outcome[f"{name} error"]``, for the test's
    thread to check."""

    def target() -> None:
        try:
            outcome[name] = act()
        except Exception as error:  # reported in the test's thread
            outcome[f"{name} error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def answered_while_held(
    checkpoints: Checkpoints,
    checkpoint: str,
    request: Callable[[], Any],
    meanwhile: Callable[[], Any],
) -> Any:
    """``request`` sent in a thread of its own and held at ``checkpoint`` while ``meanwhile``
    runs (an admin ending the session the request already accepted, say); once it has finished,
    its answer (it raised nothing)."""
    outcome: dict[str, Any] = {}
    with checkpoints.holding(checkpoint):
        thread = in_thread(outcome, "answer", request)
        wait_until(lambda: checkpoints.arrivals(checkpoint) >= 1 or not thread.is_alive(),
                   f"the request reached {checkpoint}")  # fmt: skip
        assert thread.is_alive(), outcome
        meanwhile()
    thread.join(WAIT_TIMEOUT)
    assert not thread.is_alive()
    assert "answer error" not in outcome, outcome
    return outcome["answer"]
