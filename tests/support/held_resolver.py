"""A resolver the test controls: ``socket.getaddrinfo`` holding every lookup of one host name until
the test lets it go (a relying party's name server that never answers), every other name answered
as usual. No sleep races anything: the lookup waits on an event."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

#: Longest a held lookup waits for its release before it gives up as a resolver would (a test
#: that forgets to release, or a delivery that waits for the lookup, must not hang the run).
HOLD_LIMIT = 30.0


@dataclass
class HeldResolver:
    host: str
    #: Set once a lookup of ``host`` began.
    asked: threading.Event = field(default_factory=threading.Event)
    #: Set by the test: the held lookups may end (the name does not resolve).
    released: threading.Event = field(default_factory=threading.Event)
    #: Set once a held lookup returned to its caller (released, or given up at ``HOLD_LIMIT``).
    answered: threading.Event = field(default_factory=threading.Event)

    def getaddrinfo(self, real: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.host:
            return real(host, *args, **kwargs)
        self.asked.set()
        try:
            if not self.released.wait(HOLD_LIMIT):
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        finally:
            self.answered.set()


@contextmanager
def held_lookups(monkeypatch: pytest.MonkeyPatch, host: str) -> Iterator[HeldResolver]:
    """Hold every lookup of ``host`` within the block; released at its end."""
    resolver = HeldResolver(host)
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda *args, **kwargs: resolver.getaddrinfo(real, *args, **kwargs)
    )
    try:
        yield resolver
    finally:
        resolver.released.set()
