"""A deadline for a whole network conversation, where a socket timeout bounds each read only.

A peer that trickles its answer, a byte within each timeout, would hold the thread that talks to
it as long as it likes: a mail relay (idp.services.notifications) or a relying party's
back-channel logout endpoint (idp.services.backchannel_logout). Past the deadline another thread
shuts the connection's socket, which ends a read or write in progress with an ``OSError``; the
caller tells that apart from any other failure by the event this yields.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def conversation_deadline(
    seconds: float, socket_of: Callable[[], socket.socket | None]
) -> Iterator[threading.Event]:
    """Within the block, the conversation on ``socket_of()`` (read when the deadline comes: the
    socket may not exist yet when the block starts) is cut after ``seconds``; the event is set
    when it was."""
    cut = threading.Event()

    def expire() -> None:
        cut.set()
        sock = socket_of()
        if sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also under TLS: ``SSLSocket.shutdown`` would drop
                # the TLS object the talking thread is reading through.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield cut
    finally:
        timer.cancel()
