"""An app served over real HTTP in this process, with answers the test can hold in flight.

``HeldAnswers`` is a test-only WSGI middleware: the next request to a chosen path runs to the end
(the view's commit included) and its answer is then held, unsent, until the test releases it. A
client with a read timeout shorter than that gives up: the answer is lost after the server acted
on the request, as when a proxy times out, a node dies or a mobile network drops. No sleep races
anything: the test decides when the answer may go.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from tests.support.live import free_port

#: Longest a held answer waits for its release (a failing test must not hang the run).
HOLD_LIMIT = 60.0


@dataclass
class HeldAnswers:
    app: Any
    path: str
    #: Set once the held request's answer is ready (the app returned: its commit is done).
    produced: threading.Event = field(default_factory=threading.Event)
    #: Set by the test: the held answer may go.
    released: threading.Event = field(default_factory=threading.Event)
    #: The held answer's body, for the test to read what the client never saw.
    body: bytes = b""
    _armed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hold_next(self) -> None:
        with self._lock:
            self._armed = True
            self.produced.clear()
            self.released.clear()

    def _take(self, environ: dict[str, Any]) -> bool:
        with self._lock:
            if self._armed and environ.get("PATH_INFO") == self.path:
                self._armed = False
                return True
            return False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not self._take(environ):
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        answer = self.app(environ, start_response)
        try:
            self.body = b"".join(answer)
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        self.produced.set()
        self.released.wait(HOLD_LIMIT)
        return [self.body]


@dataclass
class ServedApp:
    url: str
    held: HeldAnswers


@contextlib.contextmanager
def serve_with_held_answers(app: Flask, path: str) -> Iterator[ServedApp]:
    """``app`` on ``http://localhost:PORT`` (a threaded Werkzeug server in this process), with
    answers to ``path`` held on demand; the server is shut down afterwards."""
    held = HeldAnswers(app.wsgi_app, path)
    port = free_port()
    server = make_server("127.0.0.1", port, held, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ServedApp(f"http://localhost:{port}", held)
    finally:
        held.released.set()
        server.shutdown()
        thread.join(timeout=30)
        server.server_close()
