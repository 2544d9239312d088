"""A dependency a request needs does not answer (Redis): a refusal the request can name.

docs/operations.md, "Redis": sign-ins that need the attempt counters (or Redis-held WebAuthn
challenges) are refused with 503 "temporarily unavailable" while Redis is down; everything that
does not need Redis carries on. The services raise ``DependencyUnavailableError``; the application's
error handler answers it (idp/app.py), audits it and counts it.

A Redis that stopped answering costs each command its socket timeout (2 s) before that refusal,
holding one of a worker's few threads, so the requests that need no Redis would queue behind the
ones that do. ``CircuitBreaker`` keeps that to one command per process in each ``open_for``: after a
failure it refuses at once, without the network, until ``open_for`` has passed; then one call
probes again, and an answer closes it (docs/operations.md, "Redis").

The breaker also bounds the audit trail of the refusals (``CircuitBreaker.refused``): one audit
row per process and ``open_for`` window, not one per refused request (docs/security.md, "Faults
and degraded dependencies").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from idp import metrics

log = logging.getLogger(__name__)
_TITLES = {"redis": "Redis"}
#: The ``Retry-After`` of a refusal for want of a dependency (RFC 9110 10.2.3; idp.unavailable),
#: and how long Redis's circuit breaker stays open (idp.redis_client): a client that waits as
#: told finds the breaker ready to probe.
RETRY_AFTER_SECONDS = 5


class DependencyUnavailableError(RuntimeError):
    """``dependency`` (``"redis"``) cannot be reached; the request cannot be decided safely.
    ``reason``: the failure's class (the breaker refused without asking: the one that opened it)."""

    def __init__(self, dependency: str, reason: str = "") -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency
        self.reason = reason


@dataclass(frozen=True)
class Refusals:
    """What one audit row of refusals says: ``count`` refusals by this process (the one being
    audited and those folded into it since the previous row), the earliest at ``since``, and how
    many each endpoint answered."""

    count: int
    since: datetime
    by_endpoint: dict[str, int]


class CircuitBreaker:
    """One process's memory of a dependency's last failure, shared by its threads.

    Closed, every call goes out. A failure opens it: for ``open_for`` seconds (of ``monotonic``,
    which a test replaces) ``admit`` refuses. The first call after that is admitted and starts a
    new ``open_for`` (so that it is the only probe, and a probe whose thread never reports back
    does not keep the breaker shut); its answer closes the breaker, its failure opens it again."""

    def __init__(
        self, dependency: str, open_for: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        #: The metric's label (``redis``); the log names it ``title``.
        self.dependency, self.title = dependency, _TITLES.get(dependency, dependency)
        self.open_for = open_for
        self.monotonic = monotonic
        #: The failure's class that opened it (a reason for the refusal, the health document).
        self.last_failure = ""
        self._lock = threading.Lock()
        self._opened_at: float | None = None  # None: closed
        # The refusals not audited yet, and when (``monotonic``) the last audited one was.
        self._unaudited: Counter[str] = Counter()
        self._unaudited_since: datetime | None = None
        self._audited_at: float | None = None

    @property
    def closed(self) -> bool:
        return self._opened_at is None

    def admit(self) -> bool:
        """Whether a call may go out now: closed, or the probe after ``open_for``."""
        with self._lock:
            if self._opened_at is None:
                return True
            now = self.monotonic()
            if now - self._opened_at < self.open_for:
                return False
            self._opened_at = now  # the probe: nobody else until it answers or fails
            return True

    def refused(self, endpoint: str, now: datetime) -> Refusals | None:
        """A request to ``endpoint`` was refused for want of the dependency at ``now`` (wall
        time): what to audit, or None when this process audited one less than ``open_for`` ago.

        Why (docs/security.md, "Faults and degraded dependencies"): during an outage the database
        is the one dependency still up, and a sign-in storm must not become a storm of INSERTs
        into it, one per refused request. What an auditor needs is that sign-ins were refused,
        from when to when, and how many: the first refusal of each ``open_for`` window (the
        breaker's, which is also the refusal's ``Retry-After``) is audited, carrying the count
        of the refusals since the previous row, the time of the earliest and each endpoint's
        share, so the rows of an outage add up to its refusals, timed to within a window. Each
        refusal is still counted in ``idp_dependency_refusals_total`` by the caller. What the
        last window of an outage refused before the breaker closes is in that metric only
        (``succeeded`` logs how many): carried into a later outage's row, it would date that
        outage wrongly. The bound is one row per process and window, whatever the request rate.
        """
        with self._lock:
            self._unaudited[endpoint] += 1
            if self._unaudited_since is None:
                self._unaudited_since = now
            at = self.monotonic()
            if self._audited_at is not None and at - self._audited_at < self.open_for:
                return None
            self._audited_at = at
            refusals = Refusals(
                self._unaudited.total(), self._unaudited_since, dict(self._unaudited)
            )
            self._unaudited, self._unaudited_since = Counter(), None
        return refusals

    def succeeded(self) -> None:
        """The dependency answered: close (a probe's answer, or any call's)."""
        with self._lock:
            was_open, self._opened_at = self._opened_at is not None, None
            unaudited = 0
            if was_open:  # the outage is over: its refusals' tally too
                unaudited = self._unaudited.total()
                self._unaudited, self._unaudited_since, self._audited_at = Counter(), None, None
        if was_open:
            log.info("%s answers again: the circuit breaker is closed", self.title)
            if unaudited:
                log.info("%d refusals while %s was unavailable, since the last audited one, "
                         "are counted in idp_dependency_refusals_total only", unaudited,
                         self.title)  # fmt: skip

    def failed(self, reason: str) -> None:
        """A call failed for want of the dependency (``reason``: the error's class): open."""
        with self._lock:
            was_closed = self._opened_at is None
            self._opened_at, self.last_failure = self.monotonic(), reason
        if was_closed:
            log.warning("%s is unavailable (%s): the circuit breaker is open, requests that "
                        "need it are refused without asking it for %g s", self.title,
                        reason, self.open_for)  # fmt: skip
            metrics.breaker_opened(self.dependency)


def counters_lost(now: datetime) -> None:
    """A count found Redis without its marker (idp.services.counter_statements
    ``COUNTS_SINCE_KEY``), and set it: Redis is new to idp, or it lost what it held (a restart
    without persistence, ``FLUSHALL``, eviction, a failover to a replica that was behind). The
    failures counted before are gone: each account and factor may be tried up to the lockout
    threshold again and backoffs start over (a lock stays: it is in the database). Only the
    count that set the marker reports it, once per loss, so an operator can alert on it
    (docs/operations.md, "Redis")."""
    log.warning("Redis holds no attempt counters from before %s: it is new to idp or lost its "
                "data (restart without persistence, FLUSHALL, eviction, failover); failures "
                "counted before are forgotten, locks stay", now.isoformat())  # fmt: skip
    metrics.counters_lost("redis")


@contextmanager
def redis_calls(breaker: CircuitBreaker | None = None) -> Iterator[None]:
    """Redis errors (refused connection, timeout, a restart mid-command) as a refusal; with
    ``breaker``, refused at once while it is open, and each outcome reported to it."""
    # Imported here, which only a deployment with Redis reaches: importing the redis package
    # was about a sixth of every idp process's start (a server, each `idp` command).
    from redis.exceptions import RedisError, ResponseError

    if breaker is not None and not breaker.admit():
        raise DependencyUnavailableError("redis", breaker.last_failure)
    try:
        yield
    except ResponseError as error:  # Redis answered (an error reply): no wait to spare anyone
        if breaker is not None:
            breaker.succeeded()
        raise DependencyUnavailableError("redis", type(error).__name__) from error
    except RedisError as error:  # no answer: a connection refused, dropped, timed out
        if breaker is not None:
            breaker.failed(type(error).__name__)
        raise DependencyUnavailableError("redis", type(error).__name__) from error
    if breaker is not None:
        breaker.succeeded()
