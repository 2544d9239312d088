"""Production WSGI servers for ``idp serve``: granian (the default) or gunicorn.

Both run one process per CPU, each with a few threads for the database and Redis waits, and both
shut down gracefully on SIGTERM: they stop accepting connections, let the requests in flight
finish (up to ``GRACEFUL_TIMEOUT`` seconds, a common orchestrator grace period) and exit.
docs/performance.md has the measurements behind the default.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
import socket
from dataclasses import dataclass

SERVERS = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"
GRACEFUL_TIMEOUT = 30
#: Idle keep-alive seconds: long enough for a browser to reuse its connection across the few
#: requests of a sign-in; behind a load balancer raise it above the balancer's idle timeout.
KEEPALIVE = 5


def cpu_count() -> int:
    # sched_getaffinity honours CPU pinning (containers, taskset); os.cpu_count() does not.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    workers: int
    #: Threads per process: they cover the I/O waits without an async framework. Processes give
    #: the parallelism (Argon2id and signing hold the GIL).
    threads: int
    access_log: bool = False
    #: The level of the log lines (idp.json_logs), the server's own lines included.
    log_level: str = "INFO"
    #: ``json`` or ``text`` (idp.json_logs.LOG_FORMATS).
    log_format: str = "json"


def production_options(host: str, port: int) -> ServerOptions:
    # WEB_CONCURRENCY is the usual knob of Python WSGI servers and platforms.
    workers = int(os.environ.get("WEB_CONCURRENCY") or cpu_count())
    return ServerOptions(host=host, port=port, workers=workers, threads=4)


def development_options(host: str, port: int) -> ServerOptions:
    # Granian warns at start about more threads than 2 per CPU + 1 (multiprocessing's count); a
    # development start stays under that, so its terminal holds no warning about idp's own
    # defaults.
    return ServerOptions(
        host=host, port=port, workers=1, threads=min(8, 2 * multiprocessing.cpu_count() + 1)
    )


class PortInUseError(OSError):
    """Another process already listens on the address asked for."""


class UnknownHostError(OSError):
    """The host to listen on is a name that resolves to no address."""


def listening_address(host: str) -> str:
    """The IP address the server listens on for ``host``. granian takes an address only (a name
    such as ``localhost`` stops its start with "invalid IP address syntax"), so a name is
    resolved here: to its first IPv4 address if it has one, as binding the name on an IPv4
    socket does (gunicorn's ``--bind localhost:5000``), else to its first address. An empty host
    is every IPv4 address, as for ``socket.bind``."""
    if not host:
        return "0.0.0.0"  # noqa: S104 - what the empty host means to socket.bind
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        try:
            found = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        return str(found[0][4][0])
    raise UnknownHostError(f"{host} names no address to listen on")


def refuse_a_taken_port(host: str, port: int) -> None:
    """granian listens with SO_REUSEPORT, so a second server on a taken port would start anyway
    and silently share its connections with whatever listens there (an old idp still running, a
    test's neighbour that picked the same free port). A plain bind, without that option, fails
    on a port someone listens on: refuse to start instead."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a restart right after a stop is fine (connections in TIME_WAIT); only a
        # listener makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(f"{host}:{port} is already in use: {error.strerror}") from error


def run(server: str, options: ServerOptions, app_target: str = "idp.wsgi:app") -> None:
    """Serve ``app_target`` (``module:attribute``) until SIGTERM or SIGINT."""
    refuse_a_taken_port(options.host, options.port)
    if server == "granian":
        run_granian(options, app_target)
    elif server == "gunicorn":
        run_gunicorn(options, app_target)
    else:
        raise ValueError(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")


def run_granian(options: ServerOptions, app_target: str) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from idp.json_logs import dict_config

    Server(
        app_target,
        address=options.host,
        port=options.port,
        interface=Interfaces.WSGI,
        workers=options.workers,
        # Granian's WSGI default is hundreds of threads per worker; a few, as with gunicorn,
        # keep the database pool small and the GIL uncontended.
        blocking_threads=options.threads,
        http=HTTPModes.http1,  # behind a proxy or on loopback; TLS ends at the proxy
        http1_settings=HTTP1Settings(keep_alive=True),
        websockets=False,
        log_access=options.access_log,
        # The main process's own lines in the same format (workers configure theirs in idp.wsgi).
        log_level=LogLevels(options.log_level.lower()),
        log_dictconfig=dict_config(options.log_level, options.log_format),
        # SIGTERM: the master signals its workers, each stops accepting and drains its requests
        # in flight; one still busy after the grace period is killed.
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        respawn_failed_workers=True,
    ).serve()


def run_gunicorn(options: ServerOptions, app_target: str) -> None:
    from gunicorn.app.base import BaseApplication

    from idp.json_logs import dict_config

    settings = {
        "bind": f"{options.host}:{options.port}",
        "workers": options.workers,
        # gthread keeps idle keep-alive connections from pinning a whole worker.
        "worker_class": "gthread",
        "threads": options.threads,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": KEEPALIVE,
        "accesslog": "-" if options.access_log else None,
        # The arbiter's own lines in the same format (workers configure theirs in idp.wsgi).
        "loglevel": options.log_level.lower(),
        "logconfig_dict": dict_config(options.log_level, options.log_format),
        # Several idp servers on one host (tests, sidecars) would share one default control
        # socket path; idp is managed by signals, so the socket is off.
        "control_socket_disable": True,
    }

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> object:
            from gunicorn.util import import_app

            return import_app(app_target)

    Gunicorn().run()
