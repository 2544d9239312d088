"""The time idp decides with: one clock object, made once per application and passed to whoever
reads the time, so that a test moves it by setting the application's clock instead of patching
``utcnow`` module by module.

``Clock.now()`` is the system's current time in UTC, aware, the same value
``idp.models.base.utcnow`` returns (column defaults keep using that function: a row's creation
stamp is not a decision). ``FrozenClock`` stands still until it is told to move (tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: How far ahead of the clock that checks a stamp the clock that wrote it may have read: the nodes
#: of one deployment disagree by far less (NTP), and a request that waited for a lock reads a
#: little behind. A stamp further ahead was written by a clock stepped back since (NTP after the
#: clock ran ahead, a restored VM): its age is unknown, and an expiry or a window measured from it
#: would be revived for as long as the step.
STAMPED_AHEAD_TOLERANCE = timedelta(seconds=60)


#: How long a row that marks something spent (a signed challenge's, a carried authorization
#: request's) outlives what it marks: the pruning node's clock may run ahead of the node that
#: checks the expiry, and a row pruned while another node still took the thing for live would let
#: it be spent twice. Longer than any clock of the deployment may read ahead of another.
KEPT_PAST_EXPIRY = 2 * STAMPED_AHEAD_TOLERANCE


def stamped_ahead(stamp: datetime, now: datetime) -> bool:
    """Whether ``stamp`` reads more than ``STAMPED_AHEAD_TOLERANCE`` after ``now``."""
    return stamp - now > STAMPED_AHEAD_TOLERANCE


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
