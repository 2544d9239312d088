"""Factor locks: the durable half of the attempt limits (idp.services.rate_limits).

A factor of an account locks at the policy's threshold of consecutive failures (NIST SP 800-63B
5.2.2: at most 100). The lock is a database row whichever store holds the counters, so losing
Redis may shorten a delay, never lift a lock (docs/security.md, "Attempt counters, lockouts and
sign-up limits"); only an admin's unlock, a passkey sign-in of the account's owner, or 30 days
lift it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, delete, false, select, true, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import FactorLock
from idp.services.counter_statements import clearing, key_parameters, named_keys
from idp.session_statements import statements_of

#: A counter with no failure for this long is forgotten (Redis expiry; pruning in the database),
#: and so is a lock (a lock lasts until an admin unlocks it or 30 days pass).
COUNTER_LIFETIME = timedelta(days=30)
#: Where an attempt that reached the threshold is about to write the lock (tests hold requests
#: here, idp.checkpoints, so that many race the one row).
LOCK_CHECKPOINT = "factor_locks.lock"
LOCKS: Table = FactorLock.__table__  # type: ignore[assignment]


@lru_cache(maxsize=4)
def _lift_statement(keys: int) -> Any:
    """One DELETE of the locks of ``keys`` keys (``key0``, ``key1``, ...), returning their keys:
    Core built once per shape and sent as a thin statement (idp.session_statements), as every
    passkey sign-in sends it (``SignInService.owner_proved``)."""
    return _lifting(named_keys(keys))


def _lifting(named: list[Any]) -> Any:
    return delete(LOCKS).where(LOCKS.c.key.in_(named)).returning(LOCKS.c.key)


def clear_and_lift_statement(keys: list[str]) -> tuple[Any, dict[str, str]]:
    """PostgreSQL: the counters' clearing (idp.services.counter_statements ``clear_statement``)
    and the lift of the same keys' locks as one statement of two data-modifying ``WITH``
    clauses (PostgreSQL's manual, 7.8.4 "Data-Modifying Statements in WITH": each runs exactly
    once, to completion, in the statement's snapshot), and its parameters; its rows are
    ``(lock, key)``, ``lock`` true for a lifted lock. A passkey sign-in's clearing of its
    owner's second factors in one round trip where there were two; SQLite has no
    data-modifying ``WITH`` and sends the two DELETEs."""
    return _clear_and_lift(len(keys)), key_parameters(keys)


@lru_cache(maxsize=4)
def _clear_and_lift(keys: int) -> Any:
    named = named_keys(keys)
    cleared = clearing(named).cte("cleared")
    lifted = _lifting(named).cte("lifted")
    return union_all(select(false().label("lock"), cleared.c.key), select(true(), lifted.c.key))


class FactorLocks:
    """Locks in the database, whichever store holds the counters (docs/security.md)."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def is_locked(self, key: str, now: datetime) -> bool:
        locked_at = self.db.scalar(select(FactorLock.locked_at).where(FactorLock.key == key))
        return locked_at is not None and locked_at > now - COUNTER_LIFETIME

    def lock(self, key: str, now: datetime) -> bool:
        """Lock the factor; True if this call locked it (a lock already there stays as it was).
        One ``INSERT ... ON CONFLICT DO NOTHING``: of parallel attempts that reach the threshold
        exactly one inserts the row (on PostgreSQL the others wait for its commit, then insert
        nothing), so what follows a lock (its count, its owner's notice) happens once."""
        checkpoints.reached(LOCK_CHECKPOINT)
        dialect = self.db.get_bind().dialect.name
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        inserted = self.db.execute(
            insert(FactorLock).values(key=key, locked_at=now)
            .on_conflict_do_nothing(index_elements=[FactorLock.key])
            .returning(FactorLock.key)
        ).first()  # fmt: skip
        return inserted is not None

    def unlock(self, key: str) -> None:
        self.db.execute(delete(FactorLock).where(FactorLock.key == key))

    def lift(self, keys: list[str]) -> list[str]:
        """Lift the locks of ``keys`` in one statement, in the caller's transaction; the keys
        that were locked."""
        lifted = statements_of(self.db).all(_lift_statement(len(keys)), key_parameters(keys))
        return sorted(key for (key,) in lifted)
