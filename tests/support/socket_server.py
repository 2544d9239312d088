"""A raw TCP server on a free loopback port for tests that need a peer misbehaving below HTTP (a
node cutting connections, a server dropping a kept-alive one): it accepts connections and hands
each to ``handle`` on a thread of its own until ``close``."""

from __future__ import annotations

import contextlib
import socket
import threading


class ThreadedSocketServer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()
