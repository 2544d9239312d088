"""A second factor that locks (docs/security.md, "Attempt counters, lockouts and sign-up
limits"): its owner is told once per lock, by the outbox's mail, whatever number of wrong codes
reach it at once. Through HTTP, on SQLite and PostgreSQL; the parallel wrong codes are real
requests held where each is about to write the lock (idp.services.factor_locks
``LOCK_CHECKPOINT``), never a sleep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from idp.clock import FrozenClock
from idp.models import OutboxMessage
from idp.services import sign_in as messages
from idp.services.factor_locks import LOCK_CHECKPOINT
from idp.services.rate_limits import LOCK_AFTER
from idp.web import email_key
from tests.functional.test_fallback import (
    password_step,
    path_of,
    recover,
    second_step,
    set_counter,
    text_of,
    user_with_totp,
)
from tests.support.checkpoints import WAIT_TIMEOUT, Checkpoints, in_thread, wait_until
from tests.support.factories import rows

#: Wrong codes sent at once at a recovery past its threshold.
PARALLEL = 6


def recovery_key(app: Flask, email: str) -> str:
    """The recovery's counter key: a keyed hash of the email, account or not."""
    with app.test_request_context():
        return f"backup:{email_key(email)}"


def lock_notices(app: Flask, user_id: str) -> list[OutboxMessage]:
    return rows(app, OutboxMessage, OutboxMessage.user_id == user_id,
                OutboxMessage.kind == "factor_locked")  # fmt: skip


def test_parallel_wrong_codes_that_lock_the_recovery_mail_its_owner_once(
    storage_app: Flask, clock: FrozenClock, checkpoints: Checkpoints
) -> None:
    """The recovery's count stands at the threshold, its lock not yet written (the moment
    between a failure's count and its lock's commit): parallel wrong codes are each counted
    past it, refused as locked, and held where each writes the lock. Released together, they
    race for the one row; the owner gets one notice, which says which way in locked, when, and
    what to do."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    user = enrolled.user
    set_counter(app, recovery_key(app, user.email), LOCK_AFTER, clock.now() - timedelta(days=1))

    outcome: dict[str, Any] = {}
    with checkpoints.holding(LOCK_CHECKPOINT):
        threads = [
            in_thread(outcome, f"guess {n}",
                      lambda n=n: recover(app.test_client(), user.email, f"wrong-code-{n:04d}"))
            for n in range(PARALLEL)
        ]  # fmt: skip
        wait_until(lambda: checkpoints.arrivals(LOCK_CHECKPOINT) >= PARALLEL,
                   "every wrong code is about to write the lock")  # fmt: skip
        assert all(thread.is_alive() for thread in threads), outcome
    for thread in threads:
        thread.join(WAIT_TIMEOUT)
        assert not thread.is_alive()
    answers = [outcome[f"guess {n}"] for n in range(PARALLEL)]
    assert all(messages.LOCKED in text_of(answer) for answer in answers), outcome

    [notice] = lock_notices(app, user.id)
    assert notice.recipient == user.email
    assert "Account recovery with a backup code was locked" in notice.body
    assert f"{clock.now():%Y-%m-%d %H:%M} UTC" in notice.body
    assert "sign in with your passkey" in notice.body
    assert "ask your administrator to unlock it" in notice.body
    # Locked, it stays locked, and further wrong codes tell nobody again.
    assert messages.LOCKED in text_of(recover(app.test_client(), user.email, "wrong-code-9999"))
    assert len(lock_notices(app, user.id)) == 1


def test_the_wrong_code_that_locks_the_authenticator_app_mails_its_owner_once(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """The wrong code that reaches the threshold locks the app and tells its owner; the wrong
    codes refused after it do not tell them again."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    user = enrolled.user
    set_counter(app, f"otp:{user.id}", LOCK_AFTER - 1, clock.now() - timedelta(days=1))
    browser = app.test_client()
    assert path_of(password_step(browser, user.email, user.password)) == "/login/second-step"

    assert messages.CODE_FAILURE in text_of(second_step(browser, "000000"))
    [notice] = lock_notices(app, user.id)
    assert "Signing in with your authenticator app was locked" in notice.body
    assert f"{clock.now():%Y-%m-%d %H:%M} UTC" in notice.body

    for code in ("111111", "222222"):
        assert messages.LOCKED in text_of(second_step(browser, code))
    assert len(lock_notices(app, user.id)) == 1
    # Nobody else was told anything.
    told = rows(app, OutboxMessage, OutboxMessage.kind == "factor_locked")
    assert [message.id for message in told] == [notice.id]
