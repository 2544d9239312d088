"""Who may use the admin console, decided without Flask (idp.services.admin_access)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from idp.models import BrowserSession, User
from idp.services.admin_access import ADMIN_REAUTH_WINDOW, AdminAccess, admin_access

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PASSKEY = ["hwk", "user", "mfa"]


def session(
    *,
    admin: bool = True,
    amr: list[str] | None = None,
    age: timedelta = timedelta(minutes=1),
    restricted: bool = False,
    disabled: bool = False,
) -> BrowserSession:
    user = User(email="root@example.com", is_admin=admin, disabled_at=NOW if disabled else None)
    return BrowserSession(
        user=user,
        amr=amr if amr is not None else PASSKEY,
        auth_time=NOW - age,
        restricted=restricted,
    )


def test_no_session_signs_in_first() -> None:
    assert admin_access(None, NOW) is AdminAccess.SIGN_IN


@pytest.mark.parametrize("amr", [["hwk", "user", "mfa"], ["swk", "user", "mfa"]])
def test_admin_with_a_recent_passkey_sign_in_is_granted(amr: list[str]) -> None:
    assert admin_access(session(amr=amr), NOW) is AdminAccess.GRANTED


def test_the_window_is_ten_minutes() -> None:
    assert timedelta(minutes=10) == ADMIN_REAUTH_WINDOW
    assert admin_access(session(age=ADMIN_REAUTH_WINDOW), NOW) is AdminAccess.GRANTED
    older = ADMIN_REAUTH_WINDOW + timedelta(seconds=1)
    assert admin_access(session(age=older), NOW) is AdminAccess.REAUTHENTICATE


@pytest.mark.parametrize(
    "amr", [["pwd"], ["pwd", "otp", "mfa"], ["pwd", "mfa"], ["otp"], [], ["hwk"], ["swk"]], ids=str
)
def test_admin_without_a_passkey_sign_in_must_reauthenticate(amr: list[str]) -> None:
    assert admin_access(session(amr=amr), NOW) is AdminAccess.REAUTHENTICATE


def test_non_admin_is_forbidden_however_strong_the_sign_in() -> None:
    assert admin_access(session(admin=False), NOW) is AdminAccess.FORBIDDEN
    # Forbidden, not "sign in again": signing in again would not make them an admin.
    old = session(admin=False, amr=["pwd"], age=timedelta(hours=1))
    assert admin_access(old, NOW) is AdminAccess.FORBIDDEN


def test_restricted_recovery_session_is_forbidden() -> None:
    assert admin_access(session(restricted=True), NOW) is AdminAccess.FORBIDDEN


def test_disabled_admin_is_forbidden() -> None:
    assert admin_access(session(disabled=True), NOW) is AdminAccess.FORBIDDEN
