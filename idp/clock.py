"""The time idp decides with: one clock object, made once per application and passed to whoever
reads the time, so that a test moves it by setting the application's clock instead of patching
``utcnow`` module by module.

``Clock.now()`` is the system's current time in UTC, aware, the same value
``idp.models.base.utcnow`` returns (column defaults keep using that function: a row's creation
stamp is not a decision). ``FrozenClock`` stands still until it is told to move (tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    """The system clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


#: The system clock: the default of every service that reads the time itself.
SYSTEM_CLOCK = Clock()


class FrozenClock(Clock):
    """A clock that reads ``at`` until ``advance`` (or ``set``) moves it; for tests."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware_utc(at)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta

    def set(self, at: datetime) -> None:
        self._at = _aware_utc(at)


def _aware_utc(at: datetime) -> datetime:
    # Every time idp compares is aware and in UTC (idp.models.base.UTCDateTime stores it so): a
    # naive value would fail only at the first comparison, far from where it was made.
    if at.tzinfo is None:
        raise ValueError("a clock's time must be timezone-aware")
    return at.astimezone(UTC)
