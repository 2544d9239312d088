"""The sign-in policy service: defaults from the settings, validated overrides in the database,
a per-node cache, audited changes (idp.services.sign_in_policy)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import load_checked_settings
from idp.models import AuditEvent, PolicyOverride
from idp.services.lifetimes import LIFETIMES, YEAR
from idp.services.sign_in_policy import (
    PolicyCache,
    PolicyError,
    SignInPolicy,
    change_policy,
    load_policy,
    parse_value,
    policy_from_settings,
    reset_policy,
)
from idp.settings import Settings, SettingsError, load_settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings()
YUBIKEY = "ee882879-721c-4913-9775-3dfcce97072a"


def test_defaults_come_from_the_settings() -> None:
    given = {"passwords_allowed": False, "lockout_threshold": 7,
             "webauthn_aaguid_allow_list": [YUBIKEY.upper()]}  # fmt: skip
    settings = load_settings(given, environ={})
    policy = policy_from_settings(settings)
    assert policy.passwords_allowed is False
    assert policy.lockout_threshold == 7
    assert policy.aaguid_allow_list == (YUBIKEY,)  # canonical, lower case
    assert policy.user_verification == "required"


def test_the_two_field_constructor_keeps_working() -> None:
    """Other pages build ``SignInPolicy(passwords_allowed, signup_enabled)``; the rest defaults
    to the strict values."""
    policy = SignInPolicy(passwords_allowed=True, signup_enabled=False)
    assert policy.user_verification_required
    assert policy.lockout_threshold == 100


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lockout_threshold", "0"),
        ("lockout_threshold", "101"),
        ("lockout_threshold", "ten"),
        ("lockout_threshold", True),
        ("session_idle_ttl", "0"),
        ("session_absolute_ttl", "-5"),
        ("passkey_prompt_snooze_days", "0"),
        ("passkey_prompt_snooze_days", "366"),
        ("session_idle_ttl", "100000000000000"),
        ("session_idle_ttl", str(YEAR + 1)),
        ("session_absolute_ttl", str(YEAR + 1)),
        ("session_absolute_ttl", "9" * 5000),
        ("user_verification", "discouraged"),
        ("attestation", "self"),
        ("aaguid_allow_list", "not-a-uuid"),
        ("passwords_allowed", "maybe"),
        ("no_such_setting", "1"),
    ],
)
def test_out_of_range_values_are_refused(name: str, value: Any) -> None:
    with pytest.raises(PolicyError):
        parse_value(name, value)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("lockout_threshold", "1", 1),
        ("lockout_threshold", "100", 100),
        ("session_idle_ttl", "60", 60),
        ("user_verification", "Preferred", "preferred"),
        ("attestation", "direct", "direct"),
        ("passwords_allowed", "off", False),
        ("aaguid_allow_list", f"{YUBIKEY}\n\n{YUBIKEY.upper()}, ", (YUBIKEY,)),
        ("aaguid_allow_list", "", ()),
    ],
)
def test_values_in_range_are_read(name: str, value: Any, expected: Any) -> None:
    assert parse_value(name, value) == expected


@pytest.mark.parametrize("name", ["session_idle_ttl", "session_absolute_ttl",
                                  "passkey_prompt_snooze_days"])  # fmt: skip
def test_the_policy_and_the_settings_share_one_lifetime_parser(name: str) -> None:
    """The console and ``idp policy set`` accept exactly what the configuration accepts."""
    bound = LIFETIMES[name]
    assert parse_value(name, str(bound.high)) == bound.high
    assert parse_value(name, str(bound.low)) == bound.low
    for beyond in (bound.high + 1, bound.low - 1):
        with pytest.raises(PolicyError, match=f"{name} must be between {bound.low} and"):
            parse_value(name, str(beyond))


def test_a_change_to_an_idle_lifetime_above_the_absolute_one_saves_nothing(db: Session) -> None:
    with pytest.raises(PolicyError, match="must not exceed"):
        change_policy(db, SETTINGS, {"session_absolute_ttl": 3600}, actor_id=None, context=None,
                      now=NOW)  # fmt: skip
    assert db.scalars(select(PolicyOverride)).all() == []
    change_policy(db, SETTINGS, {"session_absolute_ttl": 3600, "session_idle_ttl": 600},
                  actor_id=None, context=None, now=NOW)  # fmt: skip
    assert load_policy(db, SETTINGS).session_idle_ttl == 600


def test_stored_lifetimes_out_of_range_or_out_of_order_never_break_the_policy(
    db: Session,
) -> None:
    db.add(PolicyOverride(name="session_idle_ttl", value=100000000000000, updated_at=NOW))
    db.commit()
    assert load_policy(db, SETTINGS).session_idle_ttl == SETTINGS.session_idle_ttl
    db.add(PolicyOverride(name="session_absolute_ttl", value=3600, updated_at=NOW))
    db.commit()
    policy = load_policy(db, SETTINGS)  # configured idle (14 days) > stored absolute: clamped
    assert (policy.session_idle_ttl, policy.session_absolute_ttl) == (3600, 3600)


def test_a_start_with_a_lockout_threshold_above_100_is_refused() -> None:
    with pytest.raises(SettingsError, match="lockout_threshold"):
        load_checked_settings({"lockout_threshold": 101}, environ={})


def test_a_start_with_an_unknown_user_verification_is_refused() -> None:
    with pytest.raises(SettingsError, match="user_verification"):
        load_checked_settings({"webauthn_user_verification": "discouraged"}, environ={})


def test_a_change_is_stored_and_audited_with_old_and_new_values(db: Session) -> None:
    changed = change_policy(db, SETTINGS, {"lockout_threshold": "20", "passkey_prompt": "on"},
                            actor_id="admin-1", context=None, now=NOW)  # fmt: skip
    db.commit()
    assert changed == {"lockout_threshold": {"old": 100, "new": 20}}  # passkey_prompt unchanged
    assert load_policy(db, SETTINGS).lockout_threshold == 20
    event = db.scalars(select(AuditEvent)).one()
    assert (event.kind, event.actor_id) == ("policy.changed", "admin-1")
    assert event.details["changes"] == {"lockout_threshold": {"old": 100, "new": 20}}


def test_a_bad_value_saves_nothing(db: Session) -> None:
    with pytest.raises(PolicyError):
        change_policy(db, SETTINGS, {"lockout_threshold": "20", "session_idle_ttl": "0"},
                      actor_id=None, context=None, now=NOW)  # fmt: skip
    assert db.scalars(select(PolicyOverride)).all() == []
    assert db.scalars(select(AuditEvent)).all() == []


def test_setting_the_configured_default_again_removes_the_override(db: Session) -> None:
    change_policy(db, SETTINGS, {"passwords_allowed": False}, actor_id=None, context=None,
                  now=NOW)  # fmt: skip
    change_policy(db, SETTINGS, {"passwords_allowed": True}, actor_id=None, context=None,
                  now=NOW)  # fmt: skip
    assert db.scalars(select(PolicyOverride)).all() == []
    # A later change of the configuration then applies again.
    strict = load_settings({"passwords_allowed": False}, environ={})
    assert load_policy(db, strict).passwords_allowed is False


def test_reset_drops_every_override(db: Session) -> None:
    change_policy(db, SETTINGS, {"lockout_threshold": 5, "aaguid_allow_list": [YUBIKEY]},
                  actor_id=None, context=None, now=NOW)  # fmt: skip
    changed = reset_policy(db, SETTINGS, actor_id=None, context=None, now=NOW)
    assert set(changed) == {"lockout_threshold", "aaguid_allow_list"}
    assert load_policy(db, SETTINGS) == policy_from_settings(SETTINGS)


def test_a_stored_value_no_longer_valid_falls_back_to_the_default(db: Session) -> None:
    db.add(PolicyOverride(name="lockout_threshold", value=1000, updated_at=NOW))
    db.add(PolicyOverride(name="retired_setting", value=True, updated_at=NOW))
    db.commit()
    assert load_policy(db, SETTINGS).lockout_threshold == 100


def test_the_cache_is_trusted_for_its_ttl_only(db: Session) -> None:
    now = [0.0]
    cache = PolicyCache(5, clock=lambda: now[0])
    assert load_policy(db, SETTINGS, cache).lockout_threshold == 100
    change_policy(db, SETTINGS, {"lockout_threshold": 3}, actor_id=None, context=None, now=NOW)
    now[0] = 4.9
    assert load_policy(db, SETTINGS, cache).lockout_threshold == 100  # still the cached copy
    now[0] = 5.0
    assert load_policy(db, SETTINGS, cache).lockout_threshold == 3
    change_policy(db, SETTINGS, {"lockout_threshold": 4}, actor_id=None, context=None, now=NOW)
    cache.invalidate()  # the node that saved applies its own change at once
    assert load_policy(db, SETTINGS, cache).lockout_threshold == 4
