"""Failed-attempt counters per account and factor, and per client address.

DESIGN.md: at most 100 consecutive failures per account and factor, growing delays before that,
shared across nodes (database, or Redis when configured), reset by a success. Counters are keyed by
a keyed hash of the email for the password factor, so unknown emails are counted and answered
exactly like known ones (no enumeration).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp import metrics
from idp.models import AttemptCounter

#: Consecutive failures after which a factor is locked for the account (until a success elsewhere
#: resets it through an admin unlock).
LOCK_AFTER = 100
#: Failures allowed before delays start; each further failure doubles the delay, up to MAX_DELAY.
FREE_FAILURES = 5
MAX_DELAY = timedelta(minutes=15)
#: Per client address: delays start later and never lock (shared addresses, NAT).
ADDRESS_FREE_FAILURES = 50
#: A per-address counter forgets failures older than this.
ADDRESS_WINDOW = timedelta(hours=1)
#: A counter with no failure for this long is forgotten (Redis expiry; pruning in the database).
COUNTER_LIFETIME = timedelta(days=30)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    locked: bool = False
    retry_after: timedelta = timedelta(0)


class CounterStore(Protocol):
    def increment(self, key: str, now: datetime) -> int: ...
    def get(self, key: str) -> tuple[int, datetime | None]: ...
    def get_many(self, keys: list[str]) -> list[tuple[int, datetime | None]]: ...
    def reset(self, key: str) -> None: ...


class DatabaseCounters:
    """Counters in the shared database: one atomic upsert per failure."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def increment(self, key: str, now: datetime) -> int:
        dialect = self.db.get_bind().dialect.name
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(AttemptCounter)
            .values(key=key, failures=1, last_failure_at=now)
            .on_conflict_do_update(
                index_elements=[AttemptCounter.key],
                set_={"failures": AttemptCounter.failures + 1, "last_failure_at": now},
            )
            .returning(AttemptCounter.failures)
        )
        return int(self.db.execute(statement).scalar_one())

    def get(self, key: str) -> tuple[int, datetime | None]:
        row = self.db.execute(
            select(AttemptCounter.failures, AttemptCounter.last_failure_at).where(
                AttemptCounter.key == key
            )
        ).first()
        return (int(row[0]), row[1]) if row else (0, None)

    def get_many(self, keys: list[str]) -> list[tuple[int, datetime | None]]:
        """``get`` of several keys in one statement (a check reads the account's and the
        address's counters)."""
        rows = self.db.execute(
            select(AttemptCounter.key, AttemptCounter.failures, AttemptCounter.last_failure_at)
            .where(AttemptCounter.key.in_(keys))
        ).all()  # fmt: skip
        found = {row[0]: (int(row[1]), row[2]) for row in rows}
        return [found.get(key, (0, None)) for key in keys]

    def reset(self, key: str) -> None:
        self.db.execute(delete(AttemptCounter).where(AttemptCounter.key == key))


class RedisCounters:
    """Counters in Redis (``IDP_REDIS_URL``): INCR is atomic across every node."""

    def __init__(self, client: Any, ttl: timedelta = COUNTER_LIFETIME) -> None:
        self.client = client
        self.ttl = int(ttl.total_seconds())

    def increment(self, key: str, now: datetime) -> int:
        pipe = self.client.pipeline()
        pipe.incr(f"idp:fail:{key}")
        pipe.set(f"idp:fail-at:{key}", now.timestamp(), ex=self.ttl)
        pipe.expire(f"idp:fail:{key}", self.ttl)
        count, *_ = pipe.execute()
        return int(count)

    def get(self, key: str) -> tuple[int, datetime | None]:
        return self.get_many([key])[0]

    def get_many(self, keys: list[str]) -> list[tuple[int, datetime | None]]:
        names = [name for key in keys for name in (f"idp:fail:{key}", f"idp:fail-at:{key}")]
        values = self.client.mget(names)
        found = []
        for count, at in zip(values[::2], values[1::2], strict=True):
            last = datetime.fromtimestamp(float(at), UTC) if at else None
            found.append((int(count or 0), last))
        return found

    def reset(self, key: str) -> None:
        self.client.delete(f"idp:fail:{key}", f"idp:fail-at:{key}")


def _delay(failures: int, free: int) -> timedelta:
    if failures < free:
        return timedelta(0)
    return min(timedelta(seconds=2 ** min(failures - free, 20)), MAX_DELAY)


class AttemptLimiter:
    def __init__(self, store: CounterStore, lock_after: int = LOCK_AFTER) -> None:
        self.store = store
        #: The policy's lockout threshold (1 to LOCK_AFTER, idp.services.sign_in_policy).
        self.lock_after = min(lock_after, LOCK_AFTER)
        #: Account keys whose ``check`` (this limiter is made per request) found no counter at
        #: all: a success on them has nothing to reset, and skips the delete (a round trip on
        #: most sign-ins). A failure counted in parallel after the check is then left standing,
        #: which only errs on the strict side.
        self._found_empty: set[str] = set()

    @staticmethod
    def account_key(factor: str, subject: str) -> str:
        return f"{factor}:{subject}"

    @staticmethod
    def address_key(address: str) -> str:
        return f"addr:{address}"

    def check(self, account_key: str, address: str, now: datetime) -> Verdict:
        # One round trip for both counters.
        (failures, last), (address_failures, address_last) = self.store.get_many(
            [account_key, self.address_key(address)]
        )
        if failures == 0 and last is None:
            self._found_empty.add(account_key)
        else:
            self._found_empty.discard(account_key)
        if failures >= self.lock_after:
            return Verdict(allowed=False, locked=True)
        wait = _wait(failures, last, FREE_FAILURES, now)
        if address_last is not None and now - address_last > ADDRESS_WINDOW:
            address_failures = 0
        wait = max(wait, _wait(address_failures, address_last, ADDRESS_FREE_FAILURES, now))
        return Verdict(allowed=wait <= timedelta(0), retry_after=wait)

    def failed(self, account_key: str, address: str, now: datetime) -> int:
        _failures, last = self.store.get(self.address_key(address))
        if last is not None and now - last > ADDRESS_WINDOW:
            self.store.reset(self.address_key(address))
        self.store.increment(self.address_key(address), now)
        self._found_empty.discard(account_key)
        failures = self.store.increment(account_key, now)
        if failures == self.lock_after:
            # Increments are atomic: exactly one failure reaches the limit, one lockout counted.
            metrics.lockout(account_key.partition(":")[0])
        return failures

    def succeeded(self, account_key: str) -> None:
        """DESIGN.md: a success resets the account's count for the factor."""
        if account_key in self._found_empty:
            return
        self.store.reset(account_key)

    def unlock(self, account_key: str) -> None:
        self.store.reset(account_key)


class AddressBudget:
    """At most ``limit`` requests of one kind per client address in a sliding window, counted in
    the shared store: for actions that send mail (sign-up), where one address typing many
    strangers' emails must not turn idp into a mail cannon (OWASP Forgot Password / sign-up
    abuse). Each address's own limit per recipient lives in the service that sends."""

    def __init__(self, store: CounterStore, limit: int, window: timedelta) -> None:
        self.store = store
        self.limit = limit
        self.window = window

    def spend(self, action: str, address: str, now: datetime) -> bool:
        """Count one request; False once the address has used up its budget."""
        key = f"{action}:{self.address_key(address)}"
        _count, last = self.store.get(key)
        if last is not None and now - last > self.window:
            self.store.reset(key)
        # The increment is atomic: parallel requests can never all see room left.
        return self.store.increment(key, now) <= self.limit

    address_key = staticmethod(AttemptLimiter.address_key)


def _wait(failures: int, last: datetime | None, free: int, now: datetime) -> timedelta:
    if last is None:
        return timedelta(0)
    return max(timedelta(0), last + _delay(failures, free) - now)
