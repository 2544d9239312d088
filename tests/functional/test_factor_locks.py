"""A second factor that locks (docs/security.md, "Attempt counters, lockouts and sign-up
limits"): its owner is told once per lock, by the outbox's mail, whatever number of wrong codes
reach it at once, and the owner's passkey sign-in lifts it (NIST SP 800-63B 5.2.2). Through
HTTP, on SQLite and PostgreSQL; the parallel wrong codes are real requests held where each is
about to write the lock (idp.services.factor_locks ``LOCK_CHECKPOINT``), never a sleep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from idp.clock import FrozenClock
from idp.models import AuditEvent, OutboxMessage
from idp.services import sign_in as messages
from idp.services.factor_locks import LOCK_CHECKPOINT
from idp.services.rate_limits import LOCK_AFTER
from idp.web import email_key
from tests.functional.test_fallback import (
    STEP,
    failures,
    password_key,
    password_step,
    path_of,
    recover,
    second_step,
    set_counter,
    text_of,
    totp,
    user_with_totp,
)
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import WAIT_TIMEOUT, Checkpoints, in_thread, wait_until
from tests.support.factories import rows
from tests.support.passkey_flow import PasskeyPages

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


def test_a_passkey_sign_in_of_the_owner_lifts_the_locks_on_their_codes(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Someone who knows the address locked its recovery with wrong backup codes, and the
    authenticator app with wrong codes after the password. A sign-in as strong as those
    factors or weaker (the password and the app) lifts nothing else; the owner's passkey
    sign-in forgets their second factors' failures and lifts both locks, audited, so the right
    backup code and the app work again without an admin. The password's count stays."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    user = enrolled.user
    key = SoftAuthenticator()
    with_app = app.test_client()  # past the password, its second step to come
    assert path_of(password_step(with_app, user.email, user.password)) == "/login/second-step"
    owner = PasskeyPages(app.test_client())
    assert path_of(password_step(owner.browser, user.email, user.password)) == "/login/second-step"
    assert path_of(second_step(owner.browser, totp(enrolled.secret, clock.now()))) == "/account"
    assert owner.add_passkey(key).status_code == 201
    clock.advance(STEP)

    long_ago = clock.now() - timedelta(days=1)
    set_counter(app, recovery_key(app, user.email), LOCK_AFTER - 1, long_ago)
    assert messages.RECOVERY_FAILURE in text_of(recover(app.test_client(), user.email, "x" * 16))
    assert messages.LOCKED in text_of(recover(app.test_client(), user.email, enrolled.codes[0]))
    # The password and the app: a success of theirs lifts no lock of the recovery.
    browser = app.test_client()
    assert path_of(password_step(browser, user.email, user.password)) == "/login/second-step"
    assert path_of(second_step(browser, totp(enrolled.secret, clock.now()))) == "/account"
    assert messages.LOCKED in text_of(recover(app.test_client(), user.email, enrolled.codes[0]))
    clock.advance(STEP)
    set_counter(app, f"otp:{user.id}", LOCK_AFTER - 1, long_ago)
    browser = app.test_client()
    assert path_of(password_step(browser, user.email, user.password)) == "/login/second-step"
    assert messages.CODE_FAILURE in text_of(second_step(browser, "000000"))
    assert messages.LOCKED in text_of(second_step(browser, totp(enrolled.secret, clock.now())))
    set_counter(app, f"backup:{user.id}", 3, clock.now())
    set_counter(app, password_key(app, user.email), 2, clock.now())
    assert len(lock_notices(app, user.id)) == 2

    assert PasskeyPages(app.test_client()).sign_in_with_passkey(key).status_code == 200

    [cleared] = rows(app, AuditEvent, AuditEvent.kind == "factor_locks.cleared")
    assert cleared.subject_id == user.id
    assert set(cleared.details["locks_lifted"]) == {"otp", "recovery"}
    assert set(cleared.details["failures_cleared"]) == {"otp", "backup", "recovery"}
    assert failures(app, f"backup:{user.id}") == 0
    assert failures(app, password_key(app, user.email)) == 2
    assert path_of(recover(app.test_client(), user.email, enrolled.codes[0])) == (
        "/account/recover"
    )
    clock.advance(STEP)
    assert path_of(second_step(with_app, totp(enrolled.secret, clock.now()))) == "/account"
    # Nothing left to clear: a passkey sign-in writes no audit row then.
    assert PasskeyPages(app.test_client()).sign_in_with_passkey(key).status_code == 200
    assert len(rows(app, AuditEvent, AuditEvent.kind == "factor_locks.cleared")) == 1


def test_the_lockout_threshold_still_holds_after_a_passkey_sign_in(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """A passkey sign-in forgets the failures before it, not the limit: the threshold's worth
    of wrong codes after it locks the recovery again, and announces that lock."""
    app = storage_app
    enrolled = user_with_totp(app, clock)
    user = enrolled.user
    owner = PasskeyPages(app.test_client())
    assert path_of(password_step(owner.browser, user.email, user.password)) == "/login/second-step"
    assert path_of(second_step(owner.browser, totp(enrolled.secret, clock.now()))) == "/account"
    key = SoftAuthenticator()
    assert owner.add_passkey(key).status_code == 201
    set_counter(app, recovery_key(app, user.email), LOCK_AFTER, clock.now())
    assert PasskeyPages(app.test_client()).sign_in_with_passkey(key).status_code == 200
    assert failures(app, recovery_key(app, user.email)) == 0

    set_counter(app, recovery_key(app, user.email), LOCK_AFTER - 1, clock.now() - timedelta(1))
    assert messages.RECOVERY_FAILURE in text_of(recover(app.test_client(), user.email, "x" * 16))
    assert messages.LOCKED in text_of(recover(app.test_client(), user.email, enrolled.codes[0]))
    assert len(lock_notices(app, user.id)) == 1
