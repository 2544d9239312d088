"""``Retry-After`` of a budget's refusal (idp.services.anonymous ``retry_after``, RFC 9110
10.2.3): the seconds until the fixed window ends, rounded up."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from idp.services.anonymous import retry_after


def test_retry_after_is_rounded_up_never_early() -> None:
    """Within a second of the window's end ``Retry-After`` is 1, never 0; a fraction of a second
    counts as a whole one, so a client that waits as told never comes back before the end; at
    the end a new window starts, whole."""
    window = timedelta(minutes=15)
    end = datetime.fromtimestamp(math.ceil(time.time() / 900) * 900, UTC)
    assert retry_after(window, end - timedelta(milliseconds=1)) == 1
    assert retry_after(window, end - timedelta(seconds=10, milliseconds=500)) == 11
    assert retry_after(window, end - timedelta(seconds=10)) == 10
    assert retry_after(window, end) == 900
