"""The shipped balancer settings (docs/operations.md, "Load balancer"; docs/security.md, "Faults
and degraded dependencies"), run with Debian's haproxy: the documented configuration with the
test's addresses, and the three-node test's configuration (tests/support/balancer.py).

- A client that trickles its headers is dropped (``timeout http-request``); so is one that
  trickles its body, before any node sees its request (``option http-buffer-request``: granian
  gives a request one of a worker's few threads as soon as its head has arrived).
- A GET cut by a node (the connection closed without an answer, as when a node dies mid-request)
  is answered by another node; a POST that reached a node is never replayed on another.
- The three-node test's balancer has the documented fault settings.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.balancer import (
    CONFIG,
    FAULT_DIRECTIVES,
    Haproxy,
    directives,
    documented_config,
    run_haproxy,
)
from tests.support.live import LiveIdp, free_port, start_live_idp
from tests.support.socket_server import ThreadedSocketServer

#: How long the trickling client keeps sending, one byte per TRICKLE_PACE seconds, before the test
#: gives up on being dropped: far longer than any shipped ``timeout http-request``.
TRICKLE_BYTES = 240
TRICKLE_PACE = 0.5


class CuttingNode(ThreadedSocketServer):
    """A node that passes the health check (``GET /readyz``: 200) and closes every other
    connection after reading the request head, without an answer: a node dying mid-request."""

    def __init__(self) -> None:
        self.cut: list[str] = []  # request lines of the requests it cut
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        with connection:
            head = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in head:
                    chunk = connection.recv(65536)
                    if not chunk:
                        return
                    head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if request_line.startswith("GET /readyz "):
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                   b"Connection: close\r\n\r\nok")  # fmt: skip
                return
            with self._lock:
                self.cut.append(request_line)


@pytest.fixture
def cutting_node() -> Iterator[CuttingNode]:
    node = CuttingNode()
    yield node
    node.close()


def cluster_config(balancer_port: int, servers: dict[str, int]) -> str:
    """The three-node test's configuration (its global section is added by Haproxy)."""
    lines = "\n".join(f"    server {name} 127.0.0.1:{port}" for name, port in servers.items())
    full = CONFIG.format(socket="unused", port=balancer_port, backend="idp_nodes",
                         served_by="X-Served-By", source="127.0.0.1", servers=lines)  # fmt: skip
    return full.split("\n\n", 1)[1]  # without its global section


CONFIGURATIONS = {"documented": documented_config, "cluster": cluster_config}


@contextlib.contextmanager
def balancer_for(which: str, directory: Path, servers: dict[str, int]) -> Iterator[Haproxy]:
    port = free_port()
    shipped = CONFIGURATIONS[which](port, servers)
    with run_haproxy(directory, port, servers, shipped=shipped) as balancer:
        balancer.wait_until_all_up()
        yield balancer


def assert_dropped(balancer: Haproxy, start: bytes) -> None:
    """A client that sends ``start``, then one byte per TRICKLE_PACE seconds, is dropped (haproxy
    answers 408 Request Timeout and closes, or just closes) while the balancer still serves
    everyone else."""
    answer = None
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as slow:
        slow.sendall(start)
        for _ in range(TRICKLE_BYTES):
            readable, _, _ = select.select([slow], [], [], TRICKLE_PACE)
            if readable:
                answer = slow.recv(65536)
                break
            try:
                slow.sendall(b"a")
            except OSError:  # reset by the balancer
                answer = b""
                break
    assert answer is not None, f"still connected after {TRICKLE_BYTES} trickled bytes"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert requests.get(balancer.url + "/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize("which", sorted(CONFIGURATIONS))
def test_a_client_trickling_its_headers_is_dropped(
    which: str, tmp_path: Path, cutting_node: CuttingNode
) -> None:
    with balancer_for(which, tmp_path, {"node1": cutting_node.port}) as balancer:
        assert_dropped(balancer, b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nX-Trickle: ")


@pytest.mark.parametrize("which", sorted(CONFIGURATIONS))
def test_a_client_trickling_its_body_is_dropped_before_a_node_sees_it(
    which: str, tmp_path: Path, cutting_node: CuttingNode
) -> None:
    with balancer_for(which, tmp_path, {"node1": cutting_node.port}) as balancer:
        head = (b"POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/"
                b"x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % TRICKLE_BYTES)  # fmt: skip
        assert_dropped(balancer, head)
        # The node never held a thread for it: the head was not passed on without its body.
        assert not any(line.startswith("POST /token") for line in cutting_node.cut)


@pytest.fixture(scope="module")
def idp_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIdp]:
    with start_live_idp(tmp_path_factory.mktemp("balanced"), production=True) as node:
        yield node


def test_a_get_cut_by_a_node_is_answered_by_another_and_a_post_is_never_replayed(
    tmp_path: Path, cutting_node: CuttingNode, idp_node: LiveIdp
) -> None:
    servers = {"cutting": cutting_node.port, "idp": idp_node.port}
    with balancer_for("documented", tmp_path, servers) as balancer:
        # Round-robin over both nodes: half of these land on the cutting node first.
        gets = [requests.get(balancer.url + "/.well-known/openid-configuration", timeout=20)
                for _ in range(6)]  # fmt: skip
        posts = [requests.post(balancer.url + "/token", data={"grant_type": "client_credentials"},
                               timeout=20) for _ in range(6)]  # fmt: skip
    assert [r.status_code for r in gets] == [200] * 6
    cut_gets = [line for line in cutting_node.cut if line.startswith("GET ")]
    cut_posts = [line for line in cutting_node.cut if line.startswith("POST ")]
    assert cut_gets, "no GET reached the cutting node: the retry was not exercised"
    assert cut_posts, "no POST reached the cutting node"
    # Every POST the cutting node swallowed failed at the client (502) instead of being sent to
    # idp (which answers 401 invalid_client): a POST is never replayed on another node.
    statuses = sorted(r.status_code for r in posts)
    assert statuses.count(502) == len(cut_posts), statuses
    assert statuses.count(401) == len(posts) - len(cut_posts), statuses


def test_the_cluster_balancer_has_the_documented_fault_settings() -> None:
    documented = directives(documented_config(1, {"node": 2}))
    tested = directives(cluster_config(1, {"node": 2}))
    assert set(documented) == set(FAULT_DIRECTIVES)
    assert tested == documented
    assert documented["option httpchk"] == "GET /readyz"
