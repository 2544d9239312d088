"""A lifetime in seconds said as a reader counts it (idp.services.lifetimes ``in_words``), the hint
the policy page shows beside the stored number."""

from __future__ import annotations

import pytest

from idp.services.lifetimes import DAY, HOUR, MINUTE, YEAR, in_words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (14 * DAY, "14 days"),
        (DAY + 12 * HOUR, "1 day 12 hours"),
        # The largest unit and the next one down: the rest is rounded down, and a zero next
        # unit ends it ("1 day", not "1 day 0 hours 1 minute").
        (DAY + 12 * HOUR + 59 * MINUTE, "1 day 12 hours"),
        (DAY + MINUTE, "1 day"),
        (HOUR, "1 hour"),
        (90 * MINUTE, "1 hour 30 minutes"),
        (90, "1 minute 30 seconds"),
        (59, "59 seconds"),
        (1, "1 second"),
        (0, "0 seconds"),
        (YEAR, "365 days"),
    ],
)
def test_a_lifetime_in_words(seconds: int, words: str) -> None:
    assert in_words(seconds) == words
