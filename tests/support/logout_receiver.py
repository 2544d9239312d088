"""A relying party's back-channel logout endpoint for the tests: a real HTTP server on a free
loopback port that records every logout token POSTed to it, answers 200, and can hold its answer
on an event the test controls (a relying party that hangs)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import KeySet

#: OpenID Connect Back-Channel Logout 1.0 section 2.4.
EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass(frozen=True)
class Delivery:
    path: str
    content_type: str
    form: dict[str, list[str]]

    @property
    def token(self) -> str:
        [token] = self.form["logout_token"]
        return token


@dataclass
class LogoutReceiver:
    port: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    #: Cleared: each request waits for it before answering (the test sets it to let go).
    answer: threading.Event = field(default_factory=threading.Event)
    #: Set once a request is being held.
    holding: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    #: A path's answer other than 200: a status, and where a redirect points.
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: The most requests this endpoint held at once.
    most_at_once: int = 0
    _at_once: int = 0
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.answer.set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tokens(self, path: str) -> list[str]:
        with self.arrived:
            return [d.token for d in self.deliveries if d.path == path]

    def wait_for(self, count: int) -> None:
        """Until ``count`` deliveries arrived in all (an event, with a generous deadline)."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout=60), (
                f"{len(self.deliveries)} logout tokens arrived, not {count}"
            )

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                delivery = Delivery(self.path, self.headers.get("Content-Type", ""), parse_qs(body))
                with receiver.arrived:
                    receiver._at_once += 1
                    receiver.most_at_once = max(receiver.most_at_once, receiver._at_once)
                if not receiver.answer.is_set():
                    receiver.holding.set()
                    receiver.answer.wait(60)
                with receiver.arrived:
                    receiver._at_once -= 1
                    receiver.deliveries.append(delivery)
                    receiver.arrived.notify_all()
                status, location = receiver.answers.get(self.path, (200, ""))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.answer.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def logout_receiver(port: int = 0) -> Iterator[LogoutReceiver]:
    receiver = LogoutReceiver(port=port)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def verify_logout_token(
    token: str, jwks: dict[str, Any], *, issuer: str, client_id: str, alg: str
) -> dict[str, Any]:
    """What a relying party checks (Back-Channel Logout 1.0 section 2.6), as the OpenID
    Back-Channel Logout test plans list it: signature by the OP's key with the client's ID token
    alg, ``typ`` logout+jwt, ``iss``, ``aud``, ``iat``, ``exp``, ``jti``, the ``events``
    member, ``sid`` or ``sub``, and no ``nonce``. Returns the claims."""
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg])
    assert decoded.header["alg"] == alg
    assert decoded.header["typ"] == "logout+jwt"
    claims = dict(decoded.claims)
    assert claims["iss"] == issuer
    assert claims["aud"] == client_id
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["exp"], int)
    assert claims["iat"] <= claims["exp"] <= claims["iat"] + 300
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16
    assert claims["events"] == {EVENT: {}}
    assert claims.get("sid") or claims.get("sub")
    assert "nonce" not in claims
    return claims
