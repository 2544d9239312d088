"""Prometheus metrics, aggregated over every worker process of a node (no Flask imports).

A production node runs several worker processes; each one counts in its own memory-mapped files
under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode) and a scrape of
``/metrics`` on any worker adds them all up. ``idp serve`` creates that directory empty for each
start (``multiprocess_directory``); without it (tests, a single process) the counts stay in this
process.

Label values are bounded by construction: Flask endpoint names (never a raw path, which can carry a
login-link secret), known grant types and OAuth error codes, sign-in methods from the audit kinds.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

from idp.metrics_files import allocate_files_up_front

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Audit kinds that are a sign-in step, and the ``method`` label each one counts under.
SIGN_IN_METHODS = {
    "login.passkey": "passkey",
    "login.password": "password",
    "login.totp": "totp",
    "login.backup_code": "backup_code",
    "login.recovery": "recovery",
    "login.link": "login_link",
}
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
#: RFC 6749 5.2 error codes (plus RFC 6750's invalid_token); anything else counts as "other".
OAUTH_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
    "unsupported_grant_type", "invalid_scope", "invalid_token", "server_error",
})  # fmt: skip
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds; a page or API call is a few ms, a password sign-in pays for Argon2id (tens of ms).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@cache
def _metrics() -> SimpleNamespace:
    """The metric objects, made on first use in each process.

    prometheus_client picks its storage (memory or the multiprocess files) when it is first
    imported; importing it here, lazily, lets ``idp serve`` set PROMETHEUS_MULTIPROC_DIR after idp
    itself was imported and before a worker counts anything.
    """
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry(auto_describe=True)
    multiprocess = bool(os.environ.get(MULTIPROC_ENV))
    if multiprocess:
        # Files a full disk cannot kill the worker through (idp.metrics_files).
        allocate_files_up_front()
    made = SimpleNamespace(
        registry=registry,
        children={},
        # (endpoint, method, status) -> the request counter's and latency histogram's children.
        request_children={},
        sign_ins=Counter(
            "idp_sign_in_attempts_total",
            "Sign-in steps by method and outcome (success, failure, throttled).",
            ["method", "outcome"],
            registry=registry,
        ),
        token_requests=Counter(
            "idp_token_requests_total",
            "Token endpoint requests by grant type and outcome (success or the OAuth error).",
            ["grant_type", "outcome"],
            registry=registry,
        ),
        lockouts=Counter(
            "idp_lockouts_total",
            "Sign-in factors locked after too many consecutive failures, by factor.",
            ["factor"],
            registry=registry,
        ),
        dependency_refusals=Counter(
            "idp_dependency_refusals_total",
            "Requests refused with 503 because a dependency they need (Redis) is down, by "
            "dependency and endpoint.",
            ["dependency", "endpoint"],
            registry=registry,
        ),
        breaker_openings=Counter(
            "idp_dependency_breaker_opened_total",
            "Times a worker's circuit breaker opened on a dependency's failure (Redis): for a few "
            "seconds its requests that need it are refused without asking it.",
            ["dependency"],
            registry=registry,
        ),
        counters_lost=Counter(
            "idp_attempt_counters_lost_total",
            "Times a worker found the attempt counters' store without its marker (Redis new to "
            "idp, or restarted without persistence, flushed, evicting): failures counted before "
            "are forgotten.",
            ["store"],
            registry=registry,
        ),
        requests=Counter(
            "idp_http_requests_total",
            "HTTP requests by endpoint, method and status.",
            ["endpoint", "method", "status"],
            registry=registry,
        ),
        server_errors=Counter(
            "idp_http_server_errors_total",
            "HTTP responses with a 5xx status, by endpoint.",
            ["endpoint"],
            registry=registry,
        ),
        latency=Histogram(
            "idp_http_request_duration_seconds",
            "Time from the request reaching idp to its response, by endpoint.",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        anonymous_rejections=Counter(
            "idp_anonymous_rejections_total",
            "Refused anonymous requests, by audit kind and reason: audited once per address and "
            "window, not one row each (docs/operations.md, storage budgets).",
            ["kind", "reason"],
            registry=registry,
        ),
        budget_refusals=Counter(
            "idp_budget_refusals_total",
            "Requests refused past a budget (429), by budget: an address's pending requests, "
            "passkey options, DPoP proofs or sign-ups, a client's pushes, an address's failed "
            "authentications (docs/operations.md, storage budgets).",
            ["budget"],
            registry=registry,
        ),
        outbox_deliveries=Counter(
            "idp_outbox_deliveries_total",
            "Outbox delivery attempts by channel (mail, http: back-channel logout) and outcome "
            "(sent, failed).",
            ["channel", "outcome"],
            registry=registry,
        ),
        in_progress=Gauge(
            "idp_http_requests_in_progress",
            "Requests being handled right now, over every worker.",
            registry=registry,
            multiprocess_mode="livesum",
        ),
    )
    if multiprocess:
        # A worker that exits normally drops its in-progress gauge files (the counters stay:
        # they are cumulative, and a scrape must never see a total go down). Registered once the
        # metrics were made: a worker that starts on a full disk fails to make them (its gauge's
        # file has no room) at each request until there is room, and must not add a handler each
        # time (``_best_effort``).
        atexit.register(_process_exited, os.getpid())
    return made


def _process_exited(pid: int) -> None:
    if os.getpid() != pid:  # a forked child inherits the handler; it is not the one exiting
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)


# -- recording ------------------------------------------------------------------------------------
_Record = TypeVar("_Record", bound=Callable[..., None])


def _best_effort(record: _Record) -> _Record:
    """A count that cannot be stored (no room for the metrics files: idp.metrics_files) is
    dropped, said once per process in the log, and never fails the request that counted: a full
    disk must leave the 503s it causes answered, and sign-ins that count as they are audited."""

    @functools.wraps(record)
    def counting(*args: Any, **kwargs: Any) -> None:
        try:
            record(*args, **kwargs)
        except OSError as error:
            _dropped(error)

    return cast(_Record, counting)


def _dropped(error: OSError) -> None:
    if _DROPPING.is_set():
        return
    _DROPPING.set()
    logging.getLogger(__name__).warning(
        "metrics: a count was dropped, its file could not be made or grown (%s); counts that "
        "need more room are dropped until there is some",
        error.strerror or error,
    )


#: Whether this process has said that it drops counts (``_dropped``): once, not once per request.
_DROPPING = threading.Event()


@_best_effort
def audit_event_recorded(kind: str, outcome: str, details: Mapping[str, Any]) -> None:
    """Count sign-in steps as they are audited (idp.services.audit.record calls this)."""
    method = SIGN_IN_METHODS.get(kind)
    if method is None:
        return
    if outcome != "success":
        outcome = "throttled" if details.get("reason") == "throttled" else "failure"
    _metrics().sign_ins.labels(method, outcome).inc()


@_best_effort
def anonymous_rejection(kind: str, reason: str) -> None:
    """An anonymous request refused and counted here instead of audited one row each. ``reason``
    is one of the service's fixed reason codes (bounded)."""
    _metrics().anonymous_rejections.labels(kind, reason).inc()


@_best_effort
def budget_refusal(budget: str) -> None:
    """A request refused past the budget ``budget`` (idp.services.anonymous ``budget_refused``;
    a fixed name each)."""
    _metrics().budget_refusals.labels(budget).inc()


@_best_effort
def outbox_delivery(channel: str, outcome: str) -> None:
    """One delivery attempt from the outbox (idp.services.outbox); both labels are fixed names."""
    _metrics().outbox_deliveries.labels(channel, outcome).inc()


@_best_effort
def lockout(factor: str) -> None:
    _metrics().lockouts.labels(factor).inc()


@_best_effort
def dependency_refusal(dependency: str, endpoint: str) -> None:
    _metrics().dependency_refusals.labels(dependency, endpoint).inc()


@_best_effort
def breaker_opened(dependency: str) -> None:
    """A circuit breaker opened (idp.services.dependencies.CircuitBreaker)."""
    _metrics().breaker_openings.labels(dependency).inc()


@_best_effort
def counters_lost(store: str) -> None:
    """The attempt counters' store lost what it held (idp.services.dependencies)."""
    _metrics().counters_lost.labels(store).inc()


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once per process and label values: the endpoint,
    method and status of every request, whose values are bounded (the module docstring), so
    the cache is too. prometheus_client's own ``labels`` validates and locks on every call."""
    children: dict[tuple[Any, ...], Any] = _metrics().children
    key = (id(metric), *labels)
    child = children.get(key)
    if child is None:
        child = children[key] = metric.labels(*labels)
    return child


@_best_effort
def token_request(grant_type: str, status: int, error: str | None) -> None:
    grant = grant_type if grant_type in GRANT_TYPES else "other"
    outcome = "success" if status == 200 else error if error in OAUTH_ERRORS else "other"
    _child(_metrics().token_requests, grant, outcome).inc()


@_best_effort
def request_started() -> None:
    _metrics().in_progress.inc()


@_best_effort
def request_ended() -> None:
    _metrics().in_progress.dec()


@_best_effort
def request_finished(endpoint: str, method: str, status: int, seconds: float) -> None:
    metrics = _metrics()
    # Bounded before it keys anything: a client picks the method.
    method = method if method in HTTP_METHODS else "OTHER"
    # Both children of a request's labels in one lookup: this runs for every request.
    key = (endpoint, method, status)
    children = metrics.request_children.get(key)
    if children is None:
        children = metrics.request_children[key] = (
            _child(metrics.requests, endpoint, method, str(status)),
            _child(metrics.latency, endpoint, method),
        )
    children[0].inc()
    children[1].observe(seconds)
    if status >= 500:
        _child(metrics.server_errors, endpoint).inc()


# -- exposition -----------------------------------------------------------------------------------
def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return generate_latest(_metrics().registry), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    # This worker's files exist even before it counted anything; on a full disk they may not
    # (idp.metrics_files): the scrape reads the other workers' files all the same.
    with contextlib.suppress(OSError):
        _metrics()
    _forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def _forget_dead_processes(directory: Path) -> None:
    """A worker killed outright (SIGKILL, out of memory) ran no exit handler: drop its live-gauge
    files here, or its in-flight requests would count forever."""
    from prometheus_client import multiprocess

    for entry in directory.iterdir():
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                multiprocess.mark_process_dead(int(match.group(1)), str(directory))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def multiprocess_directory() -> Iterator[Path]:
    """The multiprocess directory for one ``idp serve``: the operator's PROMETHEUS_MULTIPROC_DIR
    emptied of an earlier run's files, or a private temporary directory removed afterwards.

    Set before the server starts its workers, which inherit it. A directory shared by two running
    servers would mix their counts (and the second start would wipe the first's), hence a private
    one by default.
    """
    owner = os.getpid()
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix="idp-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        # Forked workers unwind through this frame too when they exit: only the server's own
        # process cleans up.
        if os.getpid() == owner and not given:
            shutil.rmtree(directory, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
