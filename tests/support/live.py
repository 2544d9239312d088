"""A live idp for tests that need a real server: ``idp init`` + ``idp serve`` on a free port
(SQLite in a temporary directory, or a given PostgreSQL database), driven through the ``idp``
command line of this virtualenv. Served as ``http://localhost:PORT``: 127.0.0.1 is not a valid
WebAuthn RP ID."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner, Result
from requests.adapters import HTTPAdapter

INTEROP_DIR = Path(__file__).resolve().parent.parent / "interop"
IDP_BIN = Path(sys.executable).with_name("idp")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLI_TIMEOUT = 120.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


#: Where test servers listen: below Linux's ephemeral range (``ip_local_port_range``, 32768 to
#: 60999 by default), from which the kernel picks every outgoing connection's source port and
#: every ``bind(0)``. A port asked of the kernel with ``bind(0)`` and bound by a server a second
#: later could meanwhile be taken by a connection to PostgreSQL or by Chromium, and the server
#: then exits with "already in use" (a whole module's set-up failed that way once). Each pytest
#: worker (``PYTEST_XDIST_WORKER``, ``gw0``, ``gw1`` ...) takes ports from a block of its own;
#: a process outside xdist takes the last block.
_PORTS_FROM, _PORTS_TO, _BLOCK = 10_000, 32_000, 2_000
_port_lock = threading.Lock()
_next_port: list[int] = []


def free_port() -> int:
    """A loopback port with nothing bound to it now, in this process's block: ports are handed
    out in turn from a random start, so one process never hands out one port twice until it has
    gone round its block, and two suites on one machine rarely start on the same one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    blocks = (_PORTS_TO - _PORTS_FROM) // _BLOCK
    index = int(worker[2:]) % (blocks - 1) if worker[2:].isdigit() else blocks - 1
    first = _PORTS_FROM + index * _BLOCK
    with _port_lock:
        if not _next_port:
            _next_port.append(first + secrets.randbelow(_BLOCK))
        for _ in range(_BLOCK):
            port = _next_port[0]
            _next_port[0] = first + (port + 1 - first) % _BLOCK
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))  # fails if bound on 127.0.0.1 or 0.0.0.0
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port in {first} to {first + _BLOCK - 1}")


class CliError(AssertionError):
    """An ``idp`` command failed; the message has its output."""


@dataclass
class LiveIdp:
    """A running idp. ``url`` is its issuer (``http://localhost:PORT``)."""

    url: str
    port: int
    directory: Path
    env: dict[str, str]
    log_path: Path
    production: bool = False
    #: The WSGI server for ``idp serve --server`` (None: idp's default).
    server: str | None = None
    #: Where the server's stderr (its JSON log lines) goes; None: into ``log_path`` with stdout.
    stderr_path: Path | None = None
    #: A command the server runs under, e.g. ``("taskset", "-c", "0")`` (bench/peer.py pins the
    #: server to one core, its workers with it).
    launcher: tuple[str, ...] = ()
    #: What ``idp serve --host`` is given.
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    _discovery: dict[str, Any] | None = field(default=None, repr=False)

    # -- command line ---------------------------------------------------------------------------
    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [str(IDP_BIN), *args],
            input=input,
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if completed.returncode != 0:
            raise CliError(
                f"`idp {' '.join(args)}` exited with {completed.returncode}\n"
                f"stdout: {completed.stdout[-2000:]}\nstderr: {completed.stderr[-4000:]}"
            )
        return completed

    def cli(self, *args: str, input: str | None = None) -> Any:
        """Run ``idp ARGS`` and return its JSON output (pass ``--json`` where needed)."""
        stdout = self.run(*args, input=input).stdout
        try:
            return json.loads(stdout)
        except json.JSONDecodeError:
            # Tolerate log lines before the JSON document.
            start = min((i for i in (stdout.find("{"), stdout.find("[")) if i >= 0), default=-1)
            if start >= 0:
                try:
                    return json.loads(stdout[start:])
                except json.JSONDecodeError:
                    pass
            raise CliError(
                f"`idp {' '.join(args)}` did not print JSON: {stdout[-2000:]!r}"
            ) from None

    def run_in_process(self, *args: str, input: str | None = None) -> Result:
        """``idp ARGS`` in this process (Click's CliRunner) against the same deployment: what a
        command does, without starting an interpreter for it. ``run`` is for what the process
        itself does (exit status, output streams, running beside other processes)."""
        from idp.cli import main

        # The same environment as ``run``: none of this process's own IDP_* variables.
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("IDP_")}
        result = CliRunner(env=env | dict(self.env)).invoke(main, list(args), input=input)
        if result.exit_code != 0:
            raise CliError(
                f"`idp {' '.join(args)}` exited with {result.exit_code}\n"
                f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
                + (f"\nexception: {result.exception!r}" if result.exception else "")
            )
        return result

    def cli_in_process(self, *args: str, input: str | None = None) -> Any:
        """``run_in_process`` and its JSON output (pass ``--json`` where needed). A deployment
        served from another checkout's code (``PYTHONPATH`` in its environment: bench.compare)
        runs the command as that code, in a process of its own: this process's code would meet
        a schema of another revision."""
        if "PYTHONPATH" in self.env:
            return self.cli(*args, input=input)
        return json.loads(self.run_in_process(*args, input=input).stdout)

    def create_user(
        self, email: str, password: str, name: str = "Interop User", *, in_process: bool = True
    ) -> dict[str, Any]:
        """``idp users create`` in this process, or (``in_process=False``) in a process of its own:
        the only way from several threads at once, since Click's CliRunner swaps this process's
        standard streams while a command runs."""
        user = (self.cli_in_process if in_process else self.cli)(
            "users", "create", email, "--name", name, "--password-stdin", "--json",
            input=password + "\n",
        )  # fmt: skip
        assert isinstance(user, dict), user
        assert user.get("sub"), f"`idp users create` printed no sub: {user}"
        return user

    def create_client(
        self,
        *,
        name: str,
        redirect_uris: list[str] | tuple[str, ...],
        post_logout_redirect_uris: list[str] | tuple[str, ...] = (),
        public: bool = False,
        auth_method: str | None = None,
        first_party: bool = False,
        id_token_alg: str | None = None,
        jwks_file: Path | str | None = None,
        grant_types: list[str] | tuple[str, ...] = (),
        subject_type: str | None = None,
        sector_identifier: str | None = None,
        require_par: bool = False,
    ) -> dict[str, Any]:
        args = ["clients", "create", "--name", name, "--json"]
        if require_par:
            args.append("--require-par")
        if subject_type:
            args += ["--subject-type", subject_type]
        if sector_identifier:
            args += ["--sector-identifier", sector_identifier]
        for grant_type in grant_types:
            args += ["--grant-type", grant_type]
        for uri in redirect_uris:
            args += ["--redirect-uri", uri]
        for uri in post_logout_redirect_uris:
            args += ["--post-logout-redirect-uri", uri]
        if public:
            args.append("--public")
        if auth_method:
            args += ["--auth-method", auth_method]
        if first_party:
            args.append("--first-party")
        if id_token_alg:
            args += ["--id-token-alg", id_token_alg]
        if jwks_file is not None:
            args += ["--jwks-file", str(jwks_file)]
        registered = self.cli_in_process(*args)
        assert isinstance(registered, dict), registered
        assert registered.get("client_id"), (
            f"`idp clients create` printed no client_id: {registered}"
        )
        return registered

    # -- HTTP -----------------------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            response = requests.get(self.url + DISCOVERY_PATH, timeout=10)
            response.raise_for_status()
            self._discovery = response.json()
        return self._discovery

    def log_tail(self, lines: int = 80) -> str:
        tails = []
        for path in (self.log_path, self.stderr_path):
            if path is None:
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError as error:
                text = f"(no server log: {error})"
            tails.append("\n".join(text.splitlines()[-lines:]))
        return "\n--- stderr ---\n".join(tails)

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with (
            self.log_path.open("ab") as log,
            (self.stderr_path or self.log_path).open("ab") as errors,
        ):
            self.process = subprocess.Popen(
                [*self.launcher, str(IDP_BIN), "serve"]
                + ["--host", self.host, "--port", str(self.port)]
                + (["--production"] if self.production else [])
                + (["--server", self.server] if self.server else []),
                env=self.env,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=errors if self.stderr_path else subprocess.STDOUT,
                start_new_session=True,  # its own process group: the server's workers go with it
            )
        deadline = time.monotonic() + START_TIMEOUT
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`idp serve` exited with {self.process.returncode} before answering\n"
                    f"--- server log ---\n{self.log_tail()}"
                )
            try:
                response = requests.get(self.url + DISCOVERY_PATH, timeout=2)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except requests.RequestException as error:
                last_error = f"{type(error).__name__}: {error}"
            time.sleep(0.25)
        self.dump_stacks()
        self.stop()
        raise RuntimeError(
            f"idp did not answer {self.url}{DISCOVERY_PATH} within {START_TIMEOUT:.0f} s "
            f"(last: {last_error})\n--- server log ---\n{self.log_tail(lines=400)}"
        )

    def dump_stacks(self) -> None:
        """Every thread's stack of a server's workers, into its log, when it does not answer:
        SIGABRT makes each worker write them (``PYTHONFAULTHANDLER``, set by ``idp_env``) and
        end. A start that hangs once in a thousand is found from its failure's message alone."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = children(process.pid)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGABRT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # The group was created for this process alone (start_new_session above).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


class FromAddress(HTTPAdapter):
    """Connections from one loopback address of many (Linux routes all of 127.0.0.0/8 to lo)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _running(pid: int) -> bool:
    """The process is there and not a zombie (ended, its parent not told yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # field 3: state


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (the server's workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:  # field 4: ppid
                found.add(int(entry.name))
    return found


def idp_env(directory: Path, issuer: str, database_url: str | None = None) -> dict[str, str]:
    # Nothing of the caller's idp configuration (IDP_CONFIG, a Redis URL, ...) leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(
        IDP_DATABASE_URL=database_url or f"sqlite:///{directory / 'idp.db'}",
        IDP_ISSUER=issuer,
        IDP_SECRET_KEY="interop-tests-secret-key-" + "x" * 40,
        IDP_INSTANCE_PATH=str(directory / "instance"),
        PYTHONUNBUFFERED="1",
        # A server process that gets SIGABRT writes every thread's stack first (``dump_stacks``).
        PYTHONFAULTHANDLER="1",
    )
    return env


@contextlib.contextmanager
def start_live_idp(
    directory: Path,
    *,
    database_url: str | None = None,
    production: bool = False,
    server: str | None = None,
    env: dict[str, str] | None = None,
    separate_stderr: bool = False,
    init: bool = True,
    launcher: tuple[str, ...] = (),
) -> Iterator[LiveIdp]:
    """``idp init`` then ``idp serve`` on a free port; stopped by PID afterwards. ``env`` adds
    variables (``IDP_*`` settings) for the server and the CLI; ``separate_stderr`` keeps the
    server's log lines (stderr) in ``stderr_path``, apart from its stdout; ``init=False`` serves
    without ``idp init`` before it; ``launcher`` is what the server runs under
    (``LiveIdp.launcher``)."""
    (directory / "instance").mkdir(parents=True, exist_ok=True)
    port = free_port()
    issuer = f"http://localhost:{port}"
    idp = LiveIdp(
        url=issuer,
        port=port,
        directory=directory,
        env=idp_env(directory, issuer, database_url) | (env or {}),
        log_path=directory / "server.log",
        production=production,
        server=server,
        stderr_path=directory / "server.stderr.log" if separate_stderr else None,
        launcher=launcher,
    )
    if init:
        idp.run_in_process("init")
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()
