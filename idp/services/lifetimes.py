"""Every lifetime idp reads, with its bounds: the one parser for the settings (checked at start
by ``idp.load_checked_settings``) and the sign-in policy (idp.services.sign_in_policy, so the
admin console and ``idp policy set``).

Each lifetime has an upper bound. Without one, a value such as ``session_idle_ttl =
100000000000000`` overflows ``timedelta`` (and ``datetime``) arithmetic, so every request that
carries a session cookie fails; and a session lifetime beyond a year is a typo, not a policy.
Browser sessions also keep idle <= absolute: an idle lifetime longer than the absolute one would
never apply and reads like a mistake (docs/configuration.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MINUTE = 60
HOUR = 3600
DAY = 24 * HOUR
YEAR = 365 * DAY


@dataclass(frozen=True)
class LifetimeBound:
    low: int
    high: int
    unit: str = "seconds"

    def describe(self) -> str:
        return f"between {self.low} and {self.high} {self.unit}"


#: The bounds of every lifetime, by setting name (the policy uses the same names).
LIFETIMES: dict[str, LifetimeBound] = {
    # RFC 6749 4.1.2: an authorization code lives 10 minutes at most.
    "code_ttl": LifetimeBound(1, 10 * MINUTE),
    "access_token_ttl": LifetimeBound(1, DAY),
    "id_token_ttl": LifetimeBound(1, DAY),
    "refresh_token_ttl": LifetimeBound(1, YEAR),
    # Also the sign-in forms' CSRF token lifetime.
    "pending_request_ttl": LifetimeBound(1, DAY),
    # RFC 8628 5.1: a user code is short-lived, so that guessing it pays for little; minutes
    # are what a person needs to type it on another device.
    "device_code_ttl": LifetimeBound(MINUTE, 30 * MINUTE),
    # RFC 9126 2.2: a pushed request waits seconds for the browser it was pushed for; at
    # most the ten minutes an authorization code may live (RFC 6749 4.1.2).
    "par_request_ttl": LifetimeBound(5, 10 * MINUTE),
    # RFC 8628 3.2: the device's wait between polls; RFC 8628 3.5 adds 5 s per slow_down.
    "device_poll_interval": LifetimeBound(1, MINUTE),
    "session_idle_ttl": LifetimeBound(1, YEAR),
    "session_absolute_ttl": LifetimeBound(1, YEAR),
    # A restricted session (login link, invite, sign-up confirmation, backup-code recovery) only
    # adds a sign-in method: minutes, never the weeks of a full session. At least the step-up
    # window (idp.services.portal.STEP_UP_WINDOW) so that the user has the whole of it.
    "restricted_session_ttl": LifetimeBound(5 * MINUTE, 30 * MINUTE),
    # A retry follows a lost refresh answer within seconds (docs/operations.md, "A lost refresh
    # answer"); a long window only widens the time in which a stolen, already rotated refresh
    # token is still answered. 0 disables retries.
    "refresh_token_retry_grace": LifetimeBound(0, MINUTE),
    "key_cache_ttl": LifetimeBound(0, HOUR),
    # A disabled client or a replaced secret still works on other nodes for this long: seconds,
    # never the hour a signing key's cache may last.
    "client_cache_ttl": LifetimeBound(0, MINUTE),
    "policy_cache_ttl": LifetimeBound(0, HOUR),
    "login_link_ttl": LifetimeBound(MINUTE, DAY),
    "client_secret_rotation_overlap": LifetimeBound(0, 30 * DAY),
    "prune_interval": LifetimeBound(0, DAY),
    "audit_retention_days": LifetimeBound(0, 10 * 365, "days"),
    "passkey_prompt_snooze_days": LifetimeBound(1, 365, "days"),
}


def parse_lifetime(name: str, value: Any) -> int:
    """A lifetime from text (a form, the CLI, the environment) or a number (TOML, stored JSON),
    checked against its bounds. ValueError names the setting and the rule."""
    bound = LIFETIMES[name]
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number of {bound.unit}")
    try:
        # int() of a very long digit string raises ValueError too (Python's digit limit).
        number = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number of {bound.unit}") from None
    if not bound.low <= number <= bound.high:
        raise ValueError(f"{name} must be {bound.describe()}")
    return number


def check_session_lifetimes(idle: int, absolute: int) -> None:
    """A session's idle lifetime is at most its absolute one."""
    if idle > absolute:
        raise ValueError(
            f"session_idle_ttl ({idle}) must not exceed session_absolute_ttl ({absolute})"
        )


def in_words(seconds: int) -> str:
    """A lifetime in seconds as a reader counts it: "14 days", "1 day 12 hours", "59 seconds":
    its largest unit and the next one down, the rest rounded down ("1 day" for a day and a
    minute). A hint beside the exact number, which stays what is stored."""
    parts: list[str] = []
    left = seconds
    for size, unit in ((DAY, "day"), (HOUR, "hour"), (MINUTE, "minute"), (1, "second")):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
        if len(parts) == 2 or (parts and not count):
            break
    return " ".join(parts) or "0 seconds"
