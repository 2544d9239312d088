"""Attempt counters per account and factor and per client address, locks, and window budgets.

An account and factor allow at most 100 consecutive failures (the policy's lockout threshold),
with growing delays before that, shared across nodes (database, or Redis when configured),
reset by a success. Counters are keyed by a keyed hash of the email for the password factor, so
unknown emails are counted and answered exactly like known ones (no enumeration).

docs/security.md, "Attempt counters, lockouts and sign-up limits":

- **An attempt is counted before it is checked.** ``AttemptLimiter.reserve`` counts it in one
  atomic statement (an upsert, or a Redis script) that also returns the counter as it stood
  before; the verdict is made from that, so of N parallel attempts after a backoff only the first
  is checked: each later one finds the earlier ones counted. A success releases the reservation
  (the account's count is reset, the address's count taken back by one).
- **A lock is durable.** Reaching the threshold writes a ``factor_locks`` row in the database,
  which only an admin's unlock (or 30 days) lifts; Redis holds only the losable counts and
  backoff, so losing Redis may shorten a delay, never lift a lock.
- **Windows are fixed windows.** A per-address or per-recipient budget counts in a window that
  starts and ends on the clock (its start is part of the key), so no request, refused or not,
  moves its end. A budget spends only while room is left, in the statement that checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp import metrics
from idp.models import AttemptCounter
from idp.services.client_addresses import budget_address
from idp.services.counter_statements import (
    COUNT_BELOW,
    RELEASE,
    RESET,
    clear_statement,
    count_statement,
    key_parameters,
)
from idp.services.factor_locks import COUNTER_LIFETIME, FactorLocks, clear_and_lift_statement
from idp.session_statements import statements_of

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

#: Consecutive failures after which a factor is locked for the account (until an admin unlocks it,
#: or 30 days pass).
LOCK_AFTER = 100
#: Failures allowed before delays start; each further failure doubles the delay, up to MAX_DELAY.
FREE_FAILURES = 5
MAX_DELAY = timedelta(minutes=15)
#: Per client address: failures allowed in one window; then refused until the window ends (never a
#: lock: addresses are shared, NAT).
ADDRESS_FAILURES_PER_WINDOW = 50
#: The per-address window (fixed: it starts on the hour).
ADDRESS_WINDOW = timedelta(hours=1)
#: The longest window a budget may use; windowed counters are pruned after it.
MAX_WINDOW = timedelta(hours=1)
#: Key prefix of fixed-window counters (the retention rule prunes them by it).
WINDOW_PREFIX = "win:"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    locked: bool = False
    retry_after: timedelta = timedelta(0)


@dataclass(frozen=True)
class Attempt:
    """One counted attempt: the verdict on it and what a success releases."""

    verdict: Verdict
    account_key: str
    address_key: str
    #: The attempt's place among the consecutive attempts counted on the account (itself included).
    count: int
    #: A refused attempt that locked the factor (``AttemptLimiter.failed`` says it of a checked
    #: one): of the attempts that reach a lock, one alone is told so.
    locked_now: bool = False


def window_key(name: str, subject: str, now: datetime, window: timedelta) -> str:
    """The counter of ``subject`` in the fixed window holding ``now``: the window's start is in
    the key, so a new window is a new counter and nothing extends an old one."""
    return f"{WINDOW_PREFIX}{name}:{_window_start(now, window)}:{subject}"


def window_end(now: datetime, window: timedelta) -> datetime:
    return datetime.fromtimestamp(_window_start(now, window), UTC) + window


def _window_start(now: datetime, window: timedelta) -> int:
    seconds = int(window.total_seconds())
    return int(now.timestamp()) // seconds * seconds


class CounterStore(Protocol):
    def count(
        self, keys: list[tuple[str, timedelta]], now: datetime
    ) -> list[tuple[int, datetime | None]]:
        """Count one more on each key (kept for its lifetime since the last count); per key the new
        count and the time of the count before (None: the first). Atomic per key."""
        ...

    def count_below(self, key: str, limit: int, now: datetime, lifetime: timedelta) -> bool:
        """Count one more only if fewer than ``limit`` were counted, in the same statement."""
        ...

    def release(self, key: str) -> None:
        """Take one count back (a reservation whose attempt succeeded)."""
        ...

    def get(self, key: str) -> tuple[int, datetime | None]: ...
    def reset(self, key: str) -> int:
        """Forget the key; the count it had (0: none)."""
        ...

    def count_attempt(
        self, keys: list[tuple[str, timedelta]], now: datetime, locks: FactorLocks
    ) -> tuple[list[tuple[int, datetime | None]], bool]:
        """``count``, and whether the first key's factor is locked (``locks``)."""
        ...

    def clear(self, keys: list[str]) -> list[str]:
        """``reset`` each of ``keys``; those that had failures (the database: uncommitted)."""
        ...

    def clear_and_lift(self, keys: list[str], locks: FactorLocks) -> tuple[list[str], list[str]]:
        """``clear``, and lift the same keys' locks (``locks``); the keys that had failures,
        and those that were locked (the database: uncommitted)."""
        ...

    def settle(self, account_key: str, address_key: str) -> int:
        """A success: ``reset`` the account's key and ``release`` the address's; the account's
        count as it stood. The database store leaves both to the caller's commit."""
        ...


class DatabaseCounters:
    """Counters in the shared database: one atomic upsert per count.

    ``commit``: each count is committed at once, so that a parallel request sees it (a count held
    in an open transaction would either stay invisible or hold a row lock while the attempt is
    checked). Budgets counted together with the rows they limit pass ``commit=False``.

    ``alone``: an attempt counted while the request's ``Session`` has no transaction open (it
    wrote nothing yet) is sent as a write of its own on the thread's connection in autocommit
    (idp.thin_reads ``write_alone_returning``): the same statement, committed by itself before
    the check, without a ``Session`` transaction begun and committed around it."""

    def __init__(
        self,
        db: Session,
        *,
        commit: bool = True,
        alone: ThinReads | None = None,
    ) -> None:
        self.db = db
        self.commit = commit
        self.alone = alone

    def _insert(self) -> Any:
        dialect = self.db.get_bind().dialect.name
        return postgresql.insert if dialect == "postgresql" else sqlite.insert

    def _done(self) -> None:
        if not self.commit:
            return
        # What the request loaded so far stays loaded (it was read a moment ago, in this request):
        # the commit publishes the count without costing the request its reads again.
        expire, self.db.expire_on_commit = self.db.expire_on_commit, False
        try:
            self.db.commit()
        finally:
            self.db.expire_on_commit = expire

    def count(
        self, keys: list[tuple[str, timedelta]], now: datetime
    ) -> list[tuple[int, datetime | None]]:
        return [(count, previous) for count, previous, _lock in self._count(keys, now, False)]

    def count_attempt(
        self, keys: list[tuple[str, timedelta]], now: datetime, locks: FactorLocks
    ) -> tuple[list[tuple[int, datetime | None]], bool]:
        """The locks live in this database: the statement that counts reads the first key's lock
        too (one round trip; ``locks`` is not asked)."""
        rows = self._count(keys, now, True)
        locked_at = rows[0][2]
        counted = [(count, previous) for count, previous, _lock in rows]
        return counted, locked_at is not None and locked_at > now - COUNTER_LIFETIME

    def _count(
        self, keys: list[tuple[str, timedelta]], now: datetime, with_lock: bool
    ) -> list[tuple[int, datetime | None, datetime | None]]:
        names = [key for key, _lifetime in keys]
        if len(set(names)) != len(names):
            raise ValueError("each key is counted once per statement")
        statement = count_statement(len(names), with_lock)
        parameters = key_parameters(names)
        parameters["now"] = now
        if self.commit and self.alone is not None and not self.db.in_transaction():
            rows: Any = self.alone.write_alone_returning(statement, parameters)
        else:
            rows = self.db.connection().execute(statement, parameters).all()
            self._done()
        # The rows come back in no promised order: matched to the keys by name.
        by_key = {row[0]: (int(row[1]), row[2], row[3]) for row in rows}
        return [by_key[name] for name in names]

    def count_below(self, key: str, limit: int, now: datetime, lifetime: timedelta) -> bool:
        parameters = {"counter": key, "now": now, "limit": limit}
        spent = self.db.connection().execute(COUNT_BELOW, parameters).first() is not None
        self._done()
        return spent

    def release(self, key: str) -> None:
        self.db.connection().execute(RELEASE, {"counter": key})
        self._done()

    def get(self, key: str) -> tuple[int, datetime | None]:
        row = self.db.execute(
            select(AttemptCounter.failures, AttemptCounter.last_failure_at).where(
                AttemptCounter.key == key
            )
        ).first()
        return (int(row[0]), row[1]) if row else (0, None)

    def reset(self, key: str) -> int:
        removed = statements_of(self.db).first(RESET, {"counter": key})
        self._done()
        return int(removed[0]) if removed else 0

    def clear(self, keys: list[str]) -> list[str]:
        """One DELETE, in the caller's transaction (published with the sign-in it follows)."""
        return sorted(key for (key,) in statements_of(self.db).all(*clear_statement(keys)))

    def clear_and_lift(self, keys: list[str], locks: FactorLocks) -> tuple[list[str], list[str]]:
        """The locks live in this database: on PostgreSQL one statement clears the counters and
        lifts the locks (``clear_and_lift_statement``); on SQLite a DELETE each. In the caller's
        transaction."""
        statements = statements_of(self.db)
        if not statements.joins_writes:
            return self.clear(keys), locks.lift(keys)
        rows = statements.all(*clear_and_lift_statement(keys))
        cleared = sorted(key for lock, key in rows if not lock)
        return cleared, sorted(key for lock, key in rows if lock)

    def settle(self, account_key: str, address_key: str) -> int:
        """Both changes of a success, in the caller's transaction: they are published with the
        success they follow from (its audit row, its partial sign-in or session), by the commit
        that publishes it. Only counting must be seen at once; until then parallel attempts see
        the higher counts, the strict side, and a success rolled back leaves its count standing."""
        statements = statements_of(self.db)
        removed = statements.first(RESET, {"counter": account_key})
        statements.write(RELEASE, {"counter": address_key})
        return int(removed[0]) if removed else 0


def _delay(failures: int, free: int) -> timedelta:
    if failures < free:
        return timedelta(0)
    return min(timedelta(seconds=2 ** min(failures - free, 20)), MAX_DELAY)


class AttemptLimiter:
    def __init__(
        self, store: CounterStore, locks: FactorLocks, lock_after: int = LOCK_AFTER
    ) -> None:
        self.store = store
        self.locks = locks
        #: The policy's lockout threshold (1 to LOCK_AFTER, idp.services.sign_in_policy).
        self.lock_after = min(lock_after, LOCK_AFTER)

    @staticmethod
    def account_key(factor: str, subject: str) -> str:
        return f"{factor}:{subject}"

    @staticmethod
    def address_key(address: str, now: datetime) -> str:
        return window_key("addr", budget_address(address), now, ADDRESS_WINDOW)

    def reserve(self, account_key: str, address: str, now: datetime) -> Attempt:
        """Count the attempt, then judge it by the counters as they stood before it (one
        round trip). The count stands for a failure until ``succeeded`` releases it; a refused
        attempt counts too (N parallel guesses all count)."""
        address_key = self.address_key(address, now)
        counted, locked = self.store.count_attempt(
            [(account_key, COUNTER_LIFETIME), (address_key, ADDRESS_WINDOW)], now, self.locks
        )
        (count, previous_at), (address_count, _) = counted
        before = count - 1
        if locked or before >= self.lock_after:
            verdict = Verdict(allowed=False, locked=True)
        else:
            wait = _wait(before, previous_at, FREE_FAILURES, now)
            if address_count - 1 >= ADDRESS_FAILURES_PER_WINDOW:
                wait = max(wait, window_end(now, ADDRESS_WINDOW) - now)
            verdict = Verdict(allowed=wait <= timedelta(0), retry_after=wait)
        locked_now = not verdict.allowed and self._lock_if_reached(account_key, count, now)
        return Attempt(verdict, account_key, address_key, count, locked_now)

    def failed(self, attempt: Attempt, now: datetime) -> bool:
        """The checked attempt failed: its count stands; at the threshold the factor locks. True
        if this call locked it (``FactorLocks.lock``: one attempt of those that reach a lock)."""
        return self._lock_if_reached(attempt.account_key, attempt.count, now)

    def succeeded(self, attempt: Attempt) -> None:
        """a success resets the account's count for the factor; the address's count
        takes back this attempt's reservation.

        No lock existed when this attempt was counted (it would have been refused), so a lock
        found now was set meanwhile by parallel attempts counted after it: the right secret lifts
        it with the count it came from (in-flight attempts count until they succeed). The caller
        commits all of it with the success (``DatabaseCounters.settle``)."""
        if self.store.settle(attempt.account_key, attempt.address_key) >= self.lock_after:
            self.locks.unlock(attempt.account_key)

    def answered(self, attempt: Attempt) -> None:
        """The attempt was right but proves nothing about the wrong ones before it (a device's
        user code: the guesser's own device shows one, RFC 8628 5.1): only its own reservation is
        taken back, and the failures stand, so no backoff or lock resets between guesses."""
        self.store.release(attempt.account_key)
        self.store.release(attempt.address_key)

    def unlock(self, account_key: str) -> None:
        self.locks.unlock(account_key)
        self.store.reset(account_key)

    def clear(self, account_keys: list[str]) -> tuple[list[str], list[str]]:
        """Forget ``account_keys``' failures and lift their locks (``SignInService.owner_proved``),
        in the caller's transaction; the keys that had failures, and those that were locked."""
        return self.store.clear_and_lift(account_keys, self.locks)

    def _lock_if_reached(self, account_key: str, count: int, now: datetime) -> bool:
        if count >= self.lock_after and self.locks.lock(account_key, now):
            # One row per lock: the lockout is counted once, however many attempts reached it.
            metrics.lockout(account_key.partition(":")[0])
            return True
        return False


class WindowBudget:
    """At most ``limit`` of one kind of request per subject in a fixed window, counted in the
    shared store: a request is counted only while room is left, in the statement that checks it,
    and the window ends on the clock whatever is refused meanwhile."""

    def __init__(self, store: CounterStore, limit: int, window: timedelta) -> None:
        if window > MAX_WINDOW:
            raise ValueError("a budget's window is at most MAX_WINDOW (pruning relies on it)")
        self.store = store
        self.limit = limit
        self.window = window

    def spend(self, name: str, subject: str, now: datetime) -> bool:
        """Count one request; False (nothing counted) once the window's budget is used up."""
        key = window_key(name, subject, now, self.window)
        return self.store.count_below(key, self.limit, now, self.window)

    def exhausted(self, name: str, subject: str, now: datetime) -> bool:
        """Whether the window's budget is used up (counts nothing): for budgets spent only by
        failures, checked before each attempt."""
        count, _ = self.store.get(window_key(name, subject, now, self.window))
        return count >= self.limit


class AddressBudget(WindowBudget):
    """Requests of one kind per client address: for actions that send mail (sign-up), where one
    address typing many strangers' emails must not turn idp into a mail cannon (OWASP Forgot
    Password / sign-up abuse). Each recipient's own limit lives in the service that sends
    (``spend(action, address, now)``)."""


def _wait(failures: int, last: datetime | None, free: int, now: datetime) -> timedelta:
    delay = _delay(failures, free)
    # No delay is due: nothing to wait for, even when a parallel request (or another node) counted
    # at a ``now`` a moment later than this one's.
    if last is None or delay <= timedelta(0):
        return timedelta(0)
    return max(timedelta(0), last + delay - now)
