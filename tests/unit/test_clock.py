"""The clock idp decides with (idp.clock): the system's time in UTC, or a frozen one for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from idp.clock import SYSTEM_CLOCK, Clock, FrozenClock
from idp.models.base import utcnow


def test_the_system_clock_reads_aware_utc_like_utcnow() -> None:
    before = utcnow()
    now = SYSTEM_CLOCK.now()
    after = utcnow()
    assert now.tzinfo is UTC
    assert before <= now <= after


def test_a_frozen_clock_stands_still_until_advanced() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock = FrozenClock(at)
    assert isinstance(clock, Clock)
    assert clock.now() == clock.now() == at
    clock.advance(timedelta(minutes=15))
    assert clock.now() == at + timedelta(minutes=15)
    clock.set(at)
    assert clock.now() == at


def test_a_frozen_clock_keeps_utc_and_refuses_a_naive_time() -> None:
    paris = timezone(timedelta(hours=1))
    clock = FrozenClock(datetime(2030, 1, 1, 12, tzinfo=paris))
    assert clock.now() == datetime(2030, 1, 1, 11, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        FrozenClock(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2030, 1, 1))
