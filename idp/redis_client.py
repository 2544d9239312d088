"""The Redis client idp's services share: one per process, made by the composition root
(idp.composition) when ``redis_url`` is set.

docs/operations.md, "Redis": each command is tried once and waits at most 2 s (for the connection
and for the answer).
"""

from __future__ import annotations

from typing import Any

#: Seconds of the socket timeout, for the connection and for each answer.
SOCKET_TIMEOUT = 2


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
