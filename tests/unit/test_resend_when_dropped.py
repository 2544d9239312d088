"""The test suite's simulated browser (tests/support/http_flows.py ``Visitor``) resends a request
once when a kept-alive connection closes before any byte of the answer, as browsers do (RFC 9112
9.3.1 lets a server close a connection at any time), and never sends an answered request twice."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from tests.support.http_flows import Visitor
from tests.support.socket_server import ThreadedSocketServer


class DroppingServer(ThreadedSocketServer):
    """An HTTP/1.1 server on a free port that answers ``200 ok`` and keeps connections alive,
    except that it closes, without a byte of answer, the requests whose number (counted over
    all connections, from 1) is in ``drop``."""

    def __init__(self, drop: set[int]) -> None:
        self.drop = drop
        self.seen: list[str] = []
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        with connection:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(
                    (int(line.split(":")[1]) for line in lines
                     if line.lower().startswith("content-length:")), 0,
                )  # fmt: skip
                while len(pending) < length:
                    pending += connection.recv(65536)
                pending = pending[length:]
                self.seen.append(lines[0])
                if len(self.seen) in self.drop:
                    return  # closed without an answer
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[DroppingServer]:
    running = DroppingServer(request.param)
    yield running
    running.close()


@pytest.mark.parametrize("server", [{2}], indirect=True)
def test_a_post_whose_kept_alive_connection_closes_unanswered_is_sent_once_more(
    server: DroppingServer,
) -> None:
    visitor = Visitor(f"http://127.0.0.1:{server.port}")
    assert visitor.get("/page").status_code == 200
    assert visitor.post("/form", json={"a": 1}).status_code == 200
    assert visitor.get("/next").status_code == 200
    assert server.seen == ["GET /page HTTP/1.1", "POST /form HTTP/1.1", "POST /form HTTP/1.1",
                           "GET /next HTTP/1.1"]  # fmt: skip


@pytest.mark.parametrize("server", [{2, 3}], indirect=True)
def test_a_request_dropped_twice_is_not_sent_a_third_time(server: DroppingServer) -> None:
    visitor = Visitor(f"http://127.0.0.1:{server.port}")
    assert visitor.get("/page").status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        visitor.post("/form", json={"a": 1})
    assert server.seen == ["GET /page HTTP/1.1", "POST /form HTTP/1.1", "POST /form HTTP/1.1"]


@pytest.mark.parametrize("server", [set()], indirect=True)
def test_an_answered_request_is_sent_once(server: DroppingServer) -> None:
    visitor = Visitor(f"http://127.0.0.1:{server.port}")
    for _ in range(3):
        assert visitor.post("/form", json={"a": 1}).status_code == 200
    assert server.seen == ["POST /form HTTP/1.1"] * 3
