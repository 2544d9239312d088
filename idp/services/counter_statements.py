"""What the attempt counters send to their store, built once: the SQL statements of
``idp.services.rate_limits.DatabaseCounters`` and the Lua scripts of
``idp.services.redis_counters.RedisCounters`` (docs/security.md, "Attempt counters, lockouts and
sign-up limits")."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, String, Table, bindparam, column, delete, text, update

from idp.models import AttemptCounter
from idp.models.base import UTCDateTime

COUNTERS: Table = AttemptCounter.__table__  # type: ignore[assignment]


@lru_cache(maxsize=8)
def count_statement(keys: int, with_lock: bool) -> Any:
    """One upsert counting ``keys`` keys (``key0``, ``key1``, ... at ``now``), built once per
    shape. Each row returns its key, its new count, the time of the count before and, with
    ``with_lock``, the lock of the first key (docs/security.md: the lock is read by the statement
    that counts). Written as text because SQLAlchemy gives its ``ON CONFLICT`` construct no cache
    key, so that construct would be compiled again at every execution; the SQL is the same on
    PostgreSQL and SQLite (3.35+: ``RETURNING``)."""
    rows = ", ".join(f"(:key{i}, 1, :now, NULL)" for i in range(keys))
    lock = (
        ', (SELECT locked_at FROM factor_locks WHERE factor_locks."key" = :key0)'
        if with_lock
        else ", NULL"
    )
    # Only numbered placeholders are put into the text, never a value.
    sql = (
        'INSERT INTO attempt_counters ("key", failures, last_failure_at, previous_failure_at) '  # noqa: S608
        f"VALUES {rows} "
        # SET expressions read the row as it was: ``previous_failure_at`` gets the old
        # ``last_failure_at`` (PostgreSQL INSERT ... ON CONFLICT, SQLite UPSERT).
        'ON CONFLICT ("key") DO UPDATE SET failures = attempt_counters.failures + 1, '
        "previous_failure_at = attempt_counters.last_failure_at, "
        "last_failure_at = excluded.last_failure_at "
        f'RETURNING "key", failures, previous_failure_at{lock}'
    )
    return (
        text(sql)
        .bindparams(
            bindparam("now", type_=UTCDateTime()),
            *named_keys(keys),
        )
        .columns(
            column("key", String()),
            column("failures", Integer()),
            column("previous_failure_at", UTCDateTime()),
            column("locked_at", UTCDateTime()),
        )
    )


#: Count one more against ``counter`` only while its count is below ``limit`` (a budget): the
#: check and the count are one statement; on PostgreSQL the row lock makes parallel spends queue
#: and each re-reads the count before its WHERE. A row comes back only when the count was taken.
#: Text for the reason given in ``count_statement`` (the ``ON CONFLICT`` construct has no cache
#: key); the same SQL on PostgreSQL and SQLite (3.35+).
COUNT_BELOW = (
    text(
        'INSERT INTO attempt_counters ("key", failures, last_failure_at, previous_failure_at) '
        "VALUES (:counter, 1, :now, NULL) "
        'ON CONFLICT ("key") DO UPDATE SET failures = attempt_counters.failures + 1, '
        "last_failure_at = excluded.last_failure_at "
        "WHERE attempt_counters.failures < :limit "
        "RETURNING failures"
    )
    .bindparams(
        bindparam("counter", type_=String()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("limit", type_=Integer()),
    )
    .columns(column("failures", Integer()))
)

RESET = (
    delete(COUNTERS).where(COUNTERS.c.key == bindparam("counter")).returning(COUNTERS.c.failures)
)


def clear_statement(keys: list[str]) -> tuple[Any, dict[str, str]]:
    """Forgetting a few keys at once (``DatabaseCounters.clear``): one DELETE of the counters of
    ``keys`` that hold failures, returning their keys, and its parameters. Built once per number
    of keys, so that it is compiled once and sent as a thin statement (idp.session_statements),
    where an expanding IN would be rendered again at each passkey sign-in."""
    return _clear(len(keys)), key_parameters(keys)


@lru_cache(maxsize=4)
def _clear(keys: int) -> Any:
    return clearing(named_keys(keys))


def named_keys(keys: int) -> list[Any]:
    """``keys`` bind parameters, ``key0``, ``key1`` ...: a statement on a few keys, built once
    per number of keys."""
    return [bindparam(f"key{i}", type_=String) for i in range(keys)]


def key_parameters(keys: list[str]) -> dict[str, Any]:
    """The values of ``named_keys(len(keys))``: ``{"key0": keys[0], ...}``."""
    return {f"key{i}": key for i, key in enumerate(keys)}


def clearing(named: list[Any]) -> Any:
    """The DELETE of the counters of the keys ``named`` that hold failures, returning their
    keys."""
    return (
        delete(COUNTERS)
        .where(COUNTERS.c.key.in_(named), COUNTERS.c.failures > 0)
        .returning(COUNTERS.c.key)
    )


RELEASE = (
    update(COUNTERS)
    .where(COUNTERS.c.key == bindparam("counter"), COUNTERS.c.failures > 0)
    .values(failures=COUNTERS.c.failures - 1)
)


#: The key, without expiry, whose absence tells a count that Redis lost what it held (a restart
#: without persistence, ``FLUSHALL``, eviction, a failover to a replica that was behind): every
#: count sets it if missing, and says so (docs/operations.md, "Redis").
COUNTS_SINCE_KEY = "idp:fail-since"
#: KEYS[1] ``COUNTS_SINCE_KEY``, then per key pair (count, time of the last count): count one more,
#: return it and the previous time; first, 1 if the marker was missing (set now), else 0.
COUNT_SCRIPT = """
local out = {redis.call('SET', KEYS[1], ARGV[1], 'NX') and 1 or 0}
for i = 1, (#KEYS - 1) / 2 do
  local count_key, at_key = KEYS[2 * i], KEYS[2 * i + 1]
  local ttl = tonumber(ARGV[i + 1])
  local count = redis.call('INCR', count_key)
  local previous = redis.call('GET', at_key)
  redis.call('SET', at_key, ARGV[1], 'EX', ttl)
  redis.call('EXPIRE', count_key, ttl)
  out[#out + 1] = count
  out[#out + 1] = previous or ''
end
return out
"""
#: Count one more only while fewer than the limit were counted: 1 if counted, else 0.
COUNT_BELOW_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""
RELEASE_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  redis.call('DECR', KEYS[1])
end
return 0
"""
