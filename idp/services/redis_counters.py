"""Attempt counters in Redis (``IDP_REDIS_URL``): the ``CounterStore`` of
idp.services.rate_limits that every node shares without writing to the database for each
attempt (docs/security.md, "Attempt counters, lockouts and sign-up limits"). Each operation is
one script or one MULTI/EXEC pipeline, which Redis runs atomically; the locks stay in the
database (idp.services.factor_locks), so losing Redis may shorten a delay, never lift a lock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from idp.services.counter_statements import (
    COUNT_BELOW_SCRIPT,
    COUNT_SCRIPT,
    COUNTS_SINCE_KEY,
    RELEASE_SCRIPT,
)
from idp.services.dependencies import CircuitBreaker, counters_lost, redis_calls
from idp.services.factor_locks import FactorLocks


class RedisCounters:
    """Counters in Redis (``IDP_REDIS_URL``): each operation one script, which Redis runs
    atomically across every node. Redis errors, or an open ``breaker``, are a 503 refusal."""

    def __init__(self, client: Any, breaker: CircuitBreaker | None = None) -> None:
        self.client, self.breaker = client, breaker

    @staticmethod
    def _names(key: str) -> list[str]:
        return [f"idp:fail:{key}", f"idp:fail-at:{key}"]

    def count(
        self, keys: list[tuple[str, timedelta]], now: datetime
    ) -> list[tuple[int, datetime | None]]:
        names = [COUNTS_SINCE_KEY, *(name for key, _ in keys for name in self._names(key))]
        lifetimes = [max(1, int(lifetime.total_seconds())) for _, lifetime in keys]
        with redis_calls(self.breaker):
            lost, *values = self.client.eval(COUNT_SCRIPT, len(names), *names, now.timestamp(),
                                             *lifetimes)  # fmt: skip
        if lost:  # the failures counted before are gone: not silently (docs/operations.md)
            counters_lost(now)
        return [(int(count), datetime.fromtimestamp(float(previous), UTC) if previous else None)
                for count, previous in zip(values[::2], values[1::2], strict=True)]  # fmt: skip

    def count_below(self, key: str, limit: int, now: datetime, lifetime: timedelta) -> bool:
        seconds = max(1, int(lifetime.total_seconds()))
        with redis_calls(self.breaker):
            spent = self.client.eval(COUNT_BELOW_SCRIPT, 2, *self._names(key), limit,
                                     now.timestamp(), seconds)  # fmt: skip
        return int(spent) == 1

    def release(self, key: str) -> None:
        with redis_calls(self.breaker):
            self.client.eval(RELEASE_SCRIPT, 1, self._names(key)[0])

    def get(self, key: str) -> tuple[int, datetime | None]:
        with redis_calls(self.breaker):
            count, at = self.client.mget(self._names(key))
        return int(count or 0), datetime.fromtimestamp(float(at), UTC) if at else None

    def count_attempt(
        self, keys: list[tuple[str, timedelta]], now: datetime, locks: FactorLocks
    ) -> tuple[list[tuple[int, datetime | None]], bool]:
        # Locks stay in the database whatever holds the counters (docs/security.md).
        return self.count(keys, now), locks.is_locked(keys[0][0], now)

    def settle(self, account_key: str, address_key: str) -> int:
        removed = self.reset(account_key)
        self.release(address_key)
        return removed

    def clear(self, keys: list[str]) -> list[str]:
        with redis_calls(self.breaker):
            pipe = self.client.pipeline()  # MULTI/EXEC: every key, one round trip
            for key in keys:
                count_name, at_name = self._names(key)
                pipe.getdel(count_name)
                pipe.delete(at_name)
            removed = pipe.execute()[::2]
        return sorted(key for key, count in zip(keys, removed, strict=True) if int(count or 0))

    def clear_and_lift(self, keys: list[str], locks: FactorLocks) -> tuple[list[str], list[str]]:
        # Locks stay in the database whatever holds the counters (docs/security.md).
        return self.clear(keys), locks.lift(keys)

    def reset(self, key: str) -> int:
        count_name, at_name = self._names(key)
        with redis_calls(self.breaker):
            pipe = self.client.pipeline()  # MULTI/EXEC: both keys, one round trip
            pipe.getdel(count_name)
            pipe.delete(at_name)
            removed, _ = pipe.execute()
        return int(removed or 0)
