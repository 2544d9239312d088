"""A test-only hook that holds chosen requests until the test opens their gate.

Tests of what a server does with requests in flight (graceful shutdown, docs/operations.md) need
requests that are certainly in flight at a moment the test picks. Making them slow (a costly
Argon2id) races the machine's speed against the test's signal; this holds them on an event the
test controls instead. It is off unless the server's environment names a gate directory in
``IDP_TEST_REQUEST_GATE_DIR`` (only the test suite's servers set it); then a request carrying
``X-Test-Gate: NAME``:

1. writes ``NAME.arrived`` (holding the worker's pid) in the directory: it is in the application;
2. waits until the test creates ``NAME.open``, for at most ``MAX_HOLD`` seconds;
3. goes on as any other request.

Requests without the header, and every request when the variable is unset, are untouched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, request

ENVIRONMENT_VARIABLE = "IDP_TEST_REQUEST_GATE_DIR"
HEADER = "X-Test-Gate"
#: The header as the WSGI environment holds it (PEP 3333).
HEADER_ENVIRON = "HTTP_" + HEADER.upper().replace("-", "_")
#: A gate the test never opens does not hold a worker forever.
MAX_HOLD = 120.0
#: How often a held request looks for its open gate.
POLL_INTERVAL = 0.01
GATE_NAME = re.compile(r"^[a-z0-9-]{1,32}$")


def install_if_enabled(app: Flask, environ: Mapping[str, str] = os.environ) -> None:
    """A ``before_request`` hook, after the ones ``create_app`` installed: a held request has
    been counted in progress (idp.observability) and has passed the CSRF check. The token side's
    direct endpoints (idp.web.direct) find the gate in ``app.extensions`` and hold theirs at the
    same point."""
    directory = environ.get(ENVIRONMENT_VARIABLE)
    if not directory:
        return
    gate = app.extensions[EXTENSION] = RequestGate(Path(directory))

    def hold_if_asked() -> None:
        gate.hold_if_asked(request.environ)

    app.before_request(hold_if_asked)


#: Where ``install_if_enabled`` keeps the gate in ``Flask.extensions``.
EXTENSION = "idp.request_gate"


class RequestGate:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def hold_if_asked(self, environ: Mapping[str, Any]) -> None:
        name = environ.get(HEADER_ENVIRON, "")
        if GATE_NAME.match(name):
            self.hold(name)

    def hold(self, name: str) -> None:
        # Written aside, then renamed: the test never reads a half-written file.
        staged = self.directory / f".{name}.{os.getpid()}.staged"
        staged.write_text(str(os.getpid()))
        staged.replace(self.directory / f"{name}.arrived")
        gate = self.directory / f"{name}.open"
        deadline = time.monotonic() + MAX_HOLD
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
