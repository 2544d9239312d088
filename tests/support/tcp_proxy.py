"""A TCP proxy the test can cut: the way to take a shared dependency (the machine's PostgreSQL)
away from one app without touching the dependency itself.

``cut()`` closes the listening socket and every connection through it, so the app's next
statement fails and its reconnects are refused, as when the database stops; ``restore()``
listens again on the same port, as when it comes back. ``freeze()`` breaks every open connection
and accepts new ones without ever answering them, as a database host that hangs (or a balancer in
front of one that is gone) does; ``restore()`` ends that too. ``held()`` counts what reached the
frozen proxy: the connections it holds and the bytes sent on them (never read).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.support.events import wait_for


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        #: Frozen: connections accepted are held, unanswered, until ``restore()``.
        self._frozen = False
        self._held: list[socket.socket] = []
        #: The client end's address of each held connection, and those ``held()`` made itself.
        self._held_from: dict[socket.socket, tuple[str, int]] = {}
        self._markers: set[tuple[str, int]] = set()
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, address = listener.accept()
            except OSError:
                return  # cut
            with self._lock:
                if self._frozen:
                    self._held.append(client)  # read by nobody, answered never
                    self._held_from[client] = address
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Refuse new connections and break every open one."""
        with self._lock:
            listener, self._listener = self._listener, None
            open_sockets, self._sockets = self._sockets, set()
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def freeze(self) -> None:
        """Break every open connection; hold each new one open without an answer."""
        with self._lock:
            self._frozen = True
            open_sockets, self._sockets = self._sockets, set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Accept and forward connections again, on the same port (the held ones are closed)."""
        with self._lock:
            self._frozen = False
            held, self._held = self._held, []
            self._held_from.clear()
            listening = self._listener is not None
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if not listening:
            self._listen(self.port)

    def held(self) -> tuple[int, int]:
        """While frozen: how many connections the proxy holds and how many bytes were sent on
        them, every connection made before this call included. A marker connection made now is
        accepted after them (the listen queue is first in, first out), so once it is held they
        are; markers are not counted."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as marker:
            mark = marker.getsockname()[:2]
            with self._lock:
                self._markers.add(mark)
            wait_for(lambda: self._holds(mark), "the proxy holds the marker connection")
        with self._lock:
            counted = [s for s in self._held if self._held_from[s] not in self._markers]
        return len(counted), sum(_unread(connection) for connection in counted)

    def _holds(self, address: tuple[str, int]) -> bool:
        with self._lock:
            return address in self._held_from.values()

    def close(self) -> None:
        self.cut()


def _unread(connection: socket.socket) -> int:
    """Bytes waiting on ``connection``, left there (a peek; its peer may have closed since)."""
    try:
        return len(connection.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0


@contextlib.contextmanager
def tcp_proxy(target_host: str, target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    try:
        yield proxy
    finally:
        proxy.close()
