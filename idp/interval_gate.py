"""Something a process does at most once per interval, asked after every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class IntervalGate:
    """``due()`` is true at most once per ``interval`` seconds in this process (thread-safe); an
    interval of 0 or less never opens. The first call opens it."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._next_attempt = 0.0  # a fresh process is due at its first request

    def due(self) -> bool:
        if self.interval <= 0:
            return False
        # Asked after every request and almost always not due: that answer needs no lock (a
        # stale read only sends a request on to the locked check, which decides).
        if self.clock() < self._next_attempt:
            return False
        with self._lock:
            now = self.clock()
            if now < self._next_attempt:
                return False
            self._next_attempt = now + self.interval
            return True

    def defer(self, seconds: float) -> None:
        """Due again ``seconds`` from now instead."""
        with self._lock:
            self._next_attempt = self.clock() + seconds
