"""``idp serve``'s ready banner waits on a thread of its own while the WSGI server forks its
workers (idp.cli.deployment.announce_when_ready). A fork copies every lock another thread holds
at that instant, held, with no thread left in the child to release it: the waiting thread must
hold none the workers need. Its first ``getaddrinfo`` once imported the ``idna`` codec as granian
forked; the worker inherited the codec's import lock held, and every request it took waited on
it forever, since Werkzeug encodes each request's host with that codec (``Map.bind``).

The test holds the waiting thread inside any import it starts (an import finder that waits on
an event the test controls), forks at that moment, and has the child encode a host name as a
worker does. A fresh interpreter runs it: this one imported the codec long ago."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os, signal, socket, sys, threading, time

from idp.cli.deployment import announce_when_ready

BANNER_THREAD = "idp-ready-banner"
holding = threading.Event()
release = threading.Event()
imported = []


class HoldTheBannersImports:
    # Called inside the import's module lock (importlib's _find_and_load): a thread held here
    # holds that lock, as a thread caught mid-import by a fork does.
    def find_spec(self, name, path=None, target=None):
        if threading.current_thread().name == BANNER_THREAD:
            imported.append(name)
            holding.set()
            release.wait(30)
        return None


listener = socket.create_server(("127.0.0.1", 0))  # it accepts, and never answers
listener.settimeout(0.05)
assert "encodings.idna" not in sys.modules, "the codec was imported before the test"
sys.meta_path.insert(0, HoldTheBannersImports())
announce_when_ready("127.0.0.1", listener.getsockname()[1], ["ready"])

# Whichever comes first: the thread is held in an import, or its probe has connected.
connected = False
deadline = time.monotonic() + 30
while not holding.is_set() and not connected and time.monotonic() < deadline:
    try:
        listener.accept()
        connected = True
    except TimeoutError:
        pass

child = os.fork()
if child == 0:  # a worker: its first request encodes the host name (werkzeug Map.bind)
    signal.alarm(10)  # a child stuck on an inherited lock ends here, killed by SIGALRM
    "localhost".encode("idna")
    os._exit(0)
release.set()
_, status = os.waitpid(child, 0)
print(json.dumps({
    "connected": connected,
    "imported_by_banner_thread": imported,
    "child_signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    "child_exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
}))
sys.stdout.flush()
os._exit(0)
"""


def test_the_ready_banners_thread_holds_no_import_lock_a_forked_worker_needs() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=90, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["imported_by_banner_thread"] == [], outcome
    assert outcome["connected"], outcome
    assert (outcome["child_signal"], outcome["child_exit"]) == (None, 0), (
        f"a worker forked beside the banner's thread could not encode a host name: {outcome}"
    )
