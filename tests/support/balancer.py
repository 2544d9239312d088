"""Debian's haproxy in front of idp nodes: round-robin, health checks on ``/readyz``, and an
``X-Served-By`` response header naming the node that answered, so that tests can see where each
request landed without idp knowing it is being watched.

The configuration is generated in a temporary directory; haproxy runs in the foreground as a
subprocess and is stopped by its PID. Its runtime API (a Unix socket in the same directory) tells
which servers haproxy considers up. ``documented_config`` is instead the configuration shipped in
docs/operations.md, with its addresses replaced by the test's, for the tests of the shipped
settings.
"""

from __future__ import annotations

import contextlib
import csv
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Debian's package installs it in /usr/sbin (scripts/test.sh installs it when missing).
HAPROXY_BIN = "/usr/sbin/haproxy"
SERVED_BY = "X-Served-By"
BACKEND = "idp_nodes"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

# Short check intervals so that a dead node is marked down within a second (haproxy's defaults,
# 2 s and 3 failures, would take 6 s). Until then, a connection refused by the dead node is
# retried on another one ("option redispatch 1": every retry goes elsewhere). The fault settings
# are docs/operations.md's (tests/functional/test_balancer.py checks that they agree):
# "timeout http-request" drops clients that trickle their headers, and with "option
# http-buffer-request" their bodies too, before a node sees the request; after a request reached
# a node, only GET and HEAD are replayed on another one ("disable-l7-retry" for every other
# method): a POST to /token replayed elsewhere would spend its code or refresh token twice.
GLOBAL = """\
global
    maxconn 512
    stats socket {socket} mode 600 level admin

"""
CONFIG = (
    GLOBAL
    + """\
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    option http-buffer-request
    timeout check 1s
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch 1

frontend idp
    bind 127.0.0.1:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
    http-response set-header {served_by} %[srv_name]
    default-server check inter 200ms fastinter 100ms downinter 200ms fall 2 rise 1 source {source}
{servers}
"""
)
#: The settings a balancer in front of idp must have (docs/operations.md, "Load balancer").
FAULT_DIRECTIVES = (
    "timeout http-request",
    "option http-buffer-request",
    "retry-on",
    "option redispatch",
    "http-request disable-l7-retry",
    "option httpchk",
)
OPERATIONS_GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_config(port: int, servers: dict[str, int]) -> str:
    """The haproxy configuration of docs/operations.md, listening on ``127.0.0.1:port`` (plain
    HTTP) in front of ``servers`` (name -> port on 127.0.0.1) instead of its examples."""
    text = OPERATIONS_GUIDE.read_text()
    blocks = re.findall(r"```haproxy\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/operations.md should have one haproxy configuration"
    lines = []
    for line in blocks[0].splitlines():
        words = line.split()
        if words[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{port}"
        elif words[:1] == ["server"]:
            continue
        lines.append(line)
    lines += [f"    server {name} 127.0.0.1:{server_port}" for name, server_port in servers.items()]
    return "\n".join(lines) + "\n"


def directives(config: str) -> dict[str, str]:
    """The fault settings a configuration sets: directive -> its arguments."""
    found = {}
    for raw in config.splitlines():
        line = raw.split("#", 1)[0].strip()
        for directive in FAULT_DIRECTIVES:
            if line == directive or line.startswith(directive + " "):
                found[directive] = line[len(directive) :].strip()
    return found


class BalancerError(RuntimeError):
    """haproxy did not start, or did not see its servers up in time; the message says why."""


@dataclass
class Haproxy:
    """A running haproxy; ``url`` is the address clients use (``http://localhost:PORT``)."""

    port: int
    servers: dict[str, int]
    directory: Path
    source_address: str = "127.0.0.1"
    #: A whole configuration without its global section (``documented_config``); None: CONFIG.
    shipped: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def socket_path(self) -> Path:
        return self.directory / "haproxy.sock"

    @property
    def log_path(self) -> Path:
        return self.directory / "haproxy.log"

    def config(self) -> str:
        if self.shipped is not None:
            return GLOBAL.format(socket=self.socket_path) + self.shipped
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port}" for name, port in self.servers.items()
        )
        return CONFIG.format(
            socket=self.socket_path,
            port=self.port,
            backend=BACKEND,
            served_by=SERVED_BY,
            source=self.source_address,
            servers=servers,
        )

    # -- runtime API ----------------------------------------------------------------------------
    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
            unix.settimeout(5)
            unix.connect(str(self.socket_path))
            unix.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := unix.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """haproxy's view of each server: "UP", "DOWN", "UP 1/2" (going down), ..."""
        lines = self.command("show stat").lstrip("# ").splitlines()
        rows = csv.DictReader(line for line in lines if line)
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == BACKEND and row["svname"] in self.servers
        }

    def wait_for_states(self, wanted: dict[str, str], timeout: float = START_TIMEOUT) -> None:
        """Poll the runtime API until every named server is in the wanted state."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                states = self.server_states()
                if states and all(states.get(name) == state for name, state in wanted.items()):
                    return
            time.sleep(0.05)
        raise BalancerError(f"haproxy servers are {states}, wanted {wanted}\n{self.log_tail()}")

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if not Path(HAPROXY_BIN).is_file():
            raise BalancerError(
                f"no {HAPROXY_BIN}: `apt-get install haproxy` (scripts/test.sh does)"
            )
        self.config_path.write_text(self.config())
        checked = subprocess.run(
            [HAPROXY_BIN, "-c", "-q", "-f", str(self.config_path)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if checked.returncode != 0:
            raise BalancerError(f"haproxy refused its configuration:\n{checked.stderr}")
        with self.log_path.open("ab") as log:
            # -db: stay in the foreground (no daemon, no master process): its PID is haproxy.
            self.process = subprocess.Popen(
                [HAPROXY_BIN, "-db", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Listening once its runtime API answers; the servers may not be up yet.
        self.wait_for_states({})

    def wait_until_all_up(self) -> None:
        self.wait_for_states(dict.fromkeys(self.servers, "UP"))

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BalancerError(f"haproxy exited with {self.process.returncode}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no haproxy log: {error})"
        return "--- haproxy log ---\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # haproxy's "hard stop"
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def run_haproxy(
    directory: Path,
    port: int,
    servers: dict[str, int],
    *,
    source_address: str = "127.0.0.1",
    shipped: str | None = None,
) -> Iterator[Haproxy]:
    """haproxy on ``port`` balancing over ``servers`` (name -> port on 127.0.0.1), listening
    before the servers need to be up (``wait_until_all_up`` waits for them). ``shipped``: run
    that configuration (``documented_config``) instead of the multi-node test's."""
    directory.mkdir(parents=True, exist_ok=True)
    balancer = Haproxy(port=port, servers=servers, directory=directory,
                       source_address=source_address, shipped=shipped)  # fmt: skip
    try:
        balancer.start()
        yield balancer
    finally:
        balancer.stop()
