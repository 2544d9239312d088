"""A real SMTP server in the test process (aiosmtpd), optionally over TLS with a certificate from
a throw-away CA made by ``cryptography``: what idp's outbox delivers to in tests."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from tests.support.certificates import issue, root_ca
from tests.support.live import free_port
from tests.support.socket_server import ThreadedSocketServer


@dataclass(frozen=True)
class Certificates:
    """A CA file and a server certificate it signed for ``localhost``."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_certificates(directory: Path, host: str = "localhost") -> Certificates:
    ca = root_ca(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp test CA")]))
    server = issue(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]),
        (x509.SubjectAlternativeName([x509.DNSName(host)]), False),
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False),
    )
    cert, key = server.certificate, server.key
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca_file.write_bytes(ca.pem)
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class RecordingHandler:
    """Keeps every message it accepts. ``refuse``: answer DATA with a transient failure (RFC 5321
    4.2.5, 451). ``hold``: DATA waits until the test sets ``release`` (``holding`` says it is)."""

    messages: list[Message] = field(default_factory=list)
    refuse: bool = False
    hold: bool = False
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.hold:
            import asyncio

            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        if self.refuse:
            return "451 4.3.0 Try again later"
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def bodies(self) -> list[str]:
        return [str(m.get_payload(decode=True), "utf-8") for m in self.messages]


@dataclass
class SmtpServer:
    handler: RecordingHandler
    port: int

    def url(self, scheme: str = "smtp") -> str:
        return f"{scheme}://localhost:{self.port}"


@contextmanager
def smtp_server(
    certificates: Certificates | None = None, *, implicit_tls: bool = False
) -> Iterator[SmtpServer]:
    """A server on a free port of 127.0.0.1: plain, STARTTLS (required) with ``certificates``,
    or TLS from the start with ``implicit_tls``. Stopped afterwards."""
    handler = RecordingHandler()
    port = free_port()
    options: dict[str, Any] = {}
    if certificates is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certificates.cert_file, certificates.key_file)
        if implicit_tls:
            options["ssl_context"] = context
        else:
            options.update(tls_context=context, require_starttls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SmtpServer(handler, port)
    finally:
        handler.release.set()
        controller.stop()


class StalledRelay(ThreadedSocketServer):
    """A mail relay that accepts connections and never answers (a hung host, or a balancer in
    front of one that is gone): each connection is held, unanswered, until the test ends it with
    ``end_held`` (the relay then closes it, as one that gave up would) or ``close``.
    ``trickle``: instead of silence, greeting lines a byte at a time (``220-`` continuation
    lines, each byte well within any read timeout, the greeting never complete)."""

    def __init__(self, *, trickle: bool = False) -> None:
        self.trickle = trickle
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__()

    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def handle(self, connection: socket.socket) -> None:
        with self._lock:
            self.accepted += 1
            self._held.append(connection)
        while self.trickle and not self._closed.is_set():
            try:
                for byte in b"220-still greeting\r\n":
                    connection.sendall(bytes([byte]))
                    self._closed.wait(0.02)
            except OSError:
                return

    def end_held(self) -> None:
        """Close every connection held so far (new ones are held again)."""
        with self._lock:
            held, self._held = self._held, []
        for connection in held:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self._closed.set()
        super().close()
        self.end_held()
