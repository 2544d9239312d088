"""The notifier queues messages at its clock's time (idp.services.notifications)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.models import Base
from idp.services.notifications import Notifier, render


def test_a_message_is_queued_and_due_at_the_notifier_clock_time() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    expires_at = clock.now() + timedelta(hours=1)
    with Session(engine) as db:
        notifier = Notifier(db, "smtp://127.0.0.1:2525", clock=clock)
        message = notifier.notify_address(
            "ada@example.com", "signup_link", link="https://idp.example/s/x", expires_at=expires_at
        )
        db.flush()
        assert message.created_at == clock.now()
        assert message.next_attempt_at == clock.now()  # due at once, on this clock
        assert message.secret_expires_at == expires_at
        assert "https://idp.example/s/x" not in (message.redacted_body or "")
    engine.dispose()


def test_the_invite_mail_does_not_say_that_ignoring_it_leaves_no_account() -> None:
    # An admin's invite creates the account before the mail is written (docs/admins.md,
    # "Inviting users"): the mail must not tell its reader that ignoring it leaves no account,
    # only that nobody gets in without the link.
    body = render(
        "invite",
        {"inviter": "admin@example.com", "link": "https://idp.example/invite/x",
         "expires_at": datetime(2030, 1, 1, 12, 0, tzinfo=UTC)},
    )  # fmt: skip
    assert "no account is made" not in body
    assert "the account exists already, but nobody can sign in to it unless this link" in body
    assert "until 2030-01-01 12:00 UTC" in body
