"""A dependency a request needs does not answer (Redis): a refusal the request can name.

docs/operations.md, "Redis": sign-ins that need the attempt counters (or Redis-held WebAuthn
challenges) are refused with 503 "temporarily unavailable" while Redis is down; everything that
does not need Redis carries on. The services raise ``DependencyUnavailableError``; the application's
error handler answers it (idp/app.py), audits it and counts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DependencyUnavailableError(RuntimeError):
    """``dependency`` (``"redis"``) cannot be reached; the request cannot be decided safely."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency


@contextmanager
def redis_calls() -> Iterator[None]:
    """Redis errors (refused connection, timeout, a restart mid-command) as a refusal."""
    # Imported here, which only a deployment with Redis reaches: importing the redis package
    # was about a sixth of every idp process's start (a server, each `idp` command).
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as error:
        raise DependencyUnavailableError("redis") from error
