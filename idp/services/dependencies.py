"""A dependency a request needs does not answer (Redis): a refusal the request can name.

docs/operations.md, "Redis": sign-ins that need the attempt counters (or Redis-held WebAuthn
challenges) are refused with 503 "temporarily unavailable" while Redis is down; everything that
does not need Redis carries on. The services raise ``DependencyUnavailableError``; the application's
error handler answers it (idp/__init__.py), audits it and counts it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError


class DependencyUnavailableError(RuntimeError):
    """``dependency`` (``"redis"``) cannot be reached; the request cannot be decided safely."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency


@contextmanager
def redis_calls() -> Iterator[None]:
    """Redis errors (refused connection, timeout, a restart mid-command) as a refusal."""
    try:
        yield
    except RedisError as error:
        raise DependencyUnavailableError("redis") from error
