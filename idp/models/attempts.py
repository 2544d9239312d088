"""Attempt counters and the locks they lead to (idp.services.rate_limits)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class AttemptCounter(Base):
    """Consecutive failures per account and factor, or per client address (database backend)."""

    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Attempts counted, each before it was checked (idp.services.rate_limits: a reservation).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: ``last_failure_at`` before the latest count: the counting statement returns it, so that
    #: the attempt it counted is judged by the counter as it stood before (one statement).
    previous_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class FactorLock(Base):
    """A sign-in factor locked after too many consecutive failures: the state an admin lifts with
    ``idp users unlock``. Kept in the database even when the counters live in Redis, which may
    lose them (docs/security.md: a lost counter may reset a backoff, never lift a lock)."""

    __tablename__ = "factor_locks"

    #: The counter's key (``pwd:<email key>``, ``otp:<user id>``, ...).
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
