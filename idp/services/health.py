"""The state of each dependency, for the readiness probe and the health document
(docs/operations.md, "Probes" and "When a dependency fails").

A node is *ready* when it can serve its core traffic: the database answers and accepts writes
(every sign-in, code exchange and refresh writes). Redis is reported, and counts for readiness only
when the operator says the node cannot work without it (``readiness_requires_redis``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idp.models import MaintenanceRun
from idp.services.dependencies import CircuitBreaker, DependencyUnavailableError, redis_calls

OK = "ok"
#: The dependency does not answer (connection refused, timeout, authentication).
UNAVAILABLE = "unavailable"
#: The database answers but refuses writes: a read-only file or server (a replica after a
#: failover), or a full disk; Redis answers but refuses writes (a replica, ``maxmemory``).
NOT_WRITABLE = "not_writable"

#: The row every readiness check writes: a write that commits is the only proof that writes work
#: (a ``SELECT 1`` answers on a full disk and on a read-only replica).
READINESS_ROW = "readiness"
#: Below this much free space on the SQLite database's file system the node is not ready. The
#: write above is not enough on its own: SQLite's write-ahead log reuses its file's space after a
#: checkpoint, so a small write can commit on a full disk while every larger one fails
#: ("database or disk is full"). One MiB holds a sign-in's writes many times over.
SQLITE_MIN_FREE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DependencyState:
    """``state`` is one of the constants above; ``reason`` says why for the operator (an
    exception's class, or "no free space"), never a host, a port or a secret; ``detail`` is the
    error's own text, for the log only."""

    state: str
    reason: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == OK


#: What each dependency is needed for (the health document; docs/operations.md, "When a
#: dependency fails").
NEEDED_FOR = {
    "database": "everything: sign-in, sessions, tokens, userinfo, keys",
    "redis": "password, TOTP and backup-code sign-in (attempt counters), passkey ceremonies "
    "(challenges), sign-up limits and public clients' DPoP proofs; not other refresh or "
    "userinfo requests, discovery or JWKS",
}


@dataclass(frozen=True)
class HealthReport:
    """The dependencies' states, and which of them readiness requires."""

    states: dict[str, DependencyState]
    requires_redis: bool = False
    #: The attestation roots past their end (idp.services.attestation ``expired_roots``); None
    #: without roots configured. Not a dependency, and no cause to take the node out (sign-ins
    #: and tokens go on): an expired one makes the node ``degraded``, for the operator to
    #: replace it (docs/configuration.md, ``webauthn_attestation_roots``).
    expired_roots: list[str] | None = None

    def required(self, name: str) -> bool:
        return name == "database" or (name == "redis" and self.requires_redis)

    @property
    def ready(self) -> bool:
        return all(state.ok for name, state in self.states.items() if self.required(name))

    @property
    def status(self) -> str:
        """``unavailable`` when not ready; ``degraded`` when ready but a dependency the node can
        do without is down (alert on it); else ``ok``."""
        if not self.ready:
            return "unavailable"
        healthy = all(state.ok for state in self.states.values()) and not self.expired_roots
        return "ok" if healthy else "degraded"

    def checks(self) -> dict[str, str]:
        """The readiness answer: each required dependency's state, nothing more."""
        return {name: s.state for name, s in self.states.items() if self.required(name)}

    def document(self) -> dict[str, Any]:
        """The health document: every dependency's state, why, and what it is needed for; and
        the attestation roots', when there are some."""
        document: dict[str, Any] = {
            "status": self.status,
            "ready": self.ready,
            "dependencies": {
                name: {"state": state.state, "reason": state.reason,
                       "required_for_readiness": self.required(name),
                       "needed_for": NEEDED_FOR[name]}
                for name, state in self.states.items()
            },
        }  # fmt: skip
        if self.expired_roots is not None:
            document["attestation_roots"] = {
                "state": "expired" if self.expired_roots else OK,
                "expired": self.expired_roots,
            }
        return document


def database_state(db: Session, now: datetime) -> DependencyState:
    """Reachable (``SELECT 1``), with room to write (SQLite), and writable (a committed write)."""
    try:
        db.execute(text("SELECT 1"))
    except Exception as error:
        db.rollback()
        return DependencyState(UNAVAILABLE, type(error).__name__, str(error))
    database_file = _sqlite_file(db)
    if database_file is not None and free_bytes(database_file.parent) < SQLITE_MIN_FREE_BYTES:
        db.rollback()
        return DependencyState(NOT_WRITABLE, "no free space", str(database_file.parent))
    try:
        _write_heartbeat(db, now)
        db.commit()
    except Exception as error:
        db.rollback()
        return DependencyState(NOT_WRITABLE, type(error).__name__, str(error))
    return DependencyState(OK)


#: The key every Redis check writes, gone by itself after ``REDIS_PROBE_SECONDS``.
REDIS_PROBE_KEY = "idp:health"
REDIS_PROBE_SECONDS = 60
#: The check's write, sent as a script: the attempt counters are scripts
#: (idp.services.rate_limits), so a Redis that refuses scripting refuses them all.
REDIS_PROBE_SCRIPT = "return redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])"


def redis_state(redis: Any, breaker: CircuitBreaker | None = None) -> DependencyState:
    """One small write (``SET`` with an expiry) made by a script (``EVAL``), through
    ``breaker``: while it is open, unavailable without asking (its reason the failure that opened
    it), and an answer closes it (docs/operations.md, "Redis").

    A write, not a ``PING``: a Redis that answers but refuses writes (a replica after a failover,
    ``READONLY``; a Redis at its ``maxmemory`` under ``noeviction``, ``OOM``) refuses every
    counted sign-in and every passkey ceremony, and a ``PING`` alone would call it ok. By a
    script, not a plain ``SET``: every attempt count is a script, and a Redis whose ACL denies the
    client scripting (``NOPERM``) takes a ``SET`` and refuses every counted sign-in. Such an error
    reply is ``not_writable``, as for a database that refuses writes."""
    from redis.exceptions import ResponseError  # only a deployment with Redis gets here

    try:
        with redis_calls(breaker):
            redis.eval(REDIS_PROBE_SCRIPT, 1, REDIS_PROBE_KEY, REDIS_PROBE_SECONDS)
    except DependencyUnavailableError as error:
        cause = error.__cause__
        if isinstance(cause, ResponseError):  # it answered, refusing the write
            return DependencyState(NOT_WRITABLE, error.reason, str(cause))
        detail = str(cause) if cause is not None else "not asked: the circuit breaker is open"
        return DependencyState(UNAVAILABLE, error.reason, detail)
    except Exception as error:
        return DependencyState(UNAVAILABLE, type(error).__name__, str(error))
    return DependencyState(OK)


def free_bytes(directory: Path) -> int:
    """Space an unprivileged writer may still use on ``directory``'s file system."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def _sqlite_file(db: Session) -> Path | None:
    url = db.get_bind().engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _write_heartbeat(db: Session, now: datetime) -> None:
    """One small committed write: the shared ``maintenance_runs`` row ``readiness``."""
    dialect = db.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.execute(
        insert(MaintenanceRun)
        .values(name=READINESS_ROW, last_run_at=now)
        .on_conflict_do_update(index_elements=["name"], set_={"last_run_at": now})
    )
