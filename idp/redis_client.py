"""The Redis client idp's services share, and the circuit breaker in front of it: one of each per
process, made by the composition root (idp.composition) when ``redis_url`` is set.

docs/operations.md, "Redis": each command is tried once and waits at most 2 s (for the connection
and for the answer); after a failure the breaker refuses what needs Redis without asking it for
``BREAKER_OPEN_SECONDS``, then lets one request probe (idp.services.dependencies.CircuitBreaker).
"""

from __future__ import annotations

from typing import Any

from idp.services.dependencies import RETRY_AFTER_SECONDS, CircuitBreaker

#: Seconds of the socket timeout, for the connection and for each answer.
SOCKET_TIMEOUT = 2
#: How long Redis counts as unavailable after a failure: the ``Retry-After`` a refusal sends.
BREAKER_OPEN_SECONDS = float(RETRY_AFTER_SECONDS)


def redis_client(url: str) -> Any:
    """A client for ``url``, or None without one (counters and challenges in the database)."""
    if not url:
        return None
    import redis
    from redis import backoff, retry

    # One try per command (redis-py's constructor retries ten times): docs/operations.md, Redis.
    once = retry.Retry(backoff.NoBackoff(), 0)
    return redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                socket_connect_timeout=SOCKET_TIMEOUT, retry=once)  # fmt: skip


def redis_breaker() -> CircuitBreaker:
    """This process's breaker for Redis, on the monotonic clock (a test replaces it)."""
    return CircuitBreaker("redis", BREAKER_OPEN_SECONDS)
