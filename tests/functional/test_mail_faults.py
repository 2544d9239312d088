"""A mail relay that hangs (docs/operations.md, "Mail"; docs/security.md, "Faults and degraded
dependencies"): it accepts connections and never answers, or trickles an answer that never ends.
No request thread waits for it (the node's mail delivery thread does), one message's
conversation ends at its deadline, and mail that queued up behind a hung delivery waits for the
prune job's retry instead of costing one timeout each.

The relay holds each connection until the test ends it (tests/support/smtp.py ``StalledRelay``),
and the socket timeouts are raised far past the test's guard, so that a thread waiting for the
relay waits for ever: the guard (``HUNG``) only says "not for ever", it measures nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert, select

from idp.extensions import db
from idp.models import OutboxMessage
from idp.models.base import utcnow
from idp.services import notifications
from idp.services.outbox import DeliveryError, Pending
from idp.web.background import drain_outbox
from tests.support.apps import app_on
from tests.support.events import wait_for
from tests.support.factories import create_user
from tests.support.flow import csrf_token, start_session
from tests.support.smtp import StalledRelay

#: A guard far above anything that is not a hang; never reached by a passing test.
HUNG = 60
#: Socket timeouts "for ever" as far as the test goes.
FOR_EVER = 3600


@pytest.fixture
def relay() -> Iterator[StalledRelay]:
    server = StalledRelay()
    try:
        yield server
    finally:
        server.close()  # frees any thread still waiting for it


@pytest.fixture
def stalled_app(
    relay: StalledRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    monkeypatch.setattr(notifications, "SMTP_TIMEOUT", FOR_EVER)
    monkeypatch.setattr(notifications, "SMTP_DEADLINE", FOR_EVER)
    with app_on("sqlite", tmp_path, smtp_url=relay.url()) as app:
        yield app


def finishes(action: Callable[[], Any]) -> bool:
    """Run ``action`` on a thread of its own; whether it ended before the guard."""
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    thread.join(HUNG)
    return not thread.is_alive()


def change_password(app: Flask, email: str) -> Callable[[], None]:
    """A password change (which mails its user), its response closed the way a WSGI server
    closes it once sent: where work after the response runs on the request's thread."""
    user = create_user(app, email=email)

    def action() -> None:
        browser = app.test_client()
        start_session(browser, user)
        page = browser.get("/account")
        response = browser.post(
            "/account/password",
            data={"csrf_token": csrf_token(page.text), "new_password": "a new passphrase 4 mail"},
        )
        assert response.status_code == 302, response.text
        response.close()

    return action


def attempts(app: Flask) -> dict[str, tuple[int, bool]]:
    """Per recipient: the delivery attempts of its message, and whether it is still due."""
    with app.app_context():
        rows = db.session.execute(
            select(OutboxMessage.recipient, OutboxMessage.attempts,
                   OutboxMessage.next_attempt_at, OutboxMessage.sent_at)
        ).all()  # fmt: skip
        db.session.rollback()
    return {r.recipient: (r.attempts, r.sent_at is None and r.next_attempt_at is not None)
            for r in rows}  # fmt: skip


def test_a_mail_relay_that_never_answers_holds_no_request_thread(
    stalled_app: Flask, relay: StalledRelay
) -> None:
    """The request that mails is over, its thread free for the next, while the relay holds
    the delivery; once the relay gives up the message stays queued for the retry."""
    app = stalled_app
    assert finishes(change_password(app, "ada@example.com")), "the request waited for the relay"
    wait_for(lambda: relay.accepted == 1, "the delivery reaching the relay")
    assert attempts(app) == {"ada@example.com": (1, True)}
    assert app.test_client().get("/readyz").status_code == 200
    relay.end_held()
    assert finishes(lambda: drain_outbox(app))
    assert attempts(app) == {"ada@example.com": (1, True)}  # kept for the prune job's retry


def test_mail_queued_behind_a_hung_delivery_waits_for_the_retry_not_a_timeout_each(
    stalled_app: Flask, relay: StalledRelay
) -> None:
    """Three messages; the first one's delivery hangs while the other two are queued. When it
    fails, the two are taken together and the relay, still hung, is tried once more for them,
    not once per message: the third is left due, for the prune job."""
    app = stalled_app
    first, second, third = (change_password(app, f"{name}@example.com")
                            for name in ("ada", "grace", "edsger"))  # fmt: skip
    assert finishes(first)
    wait_for(lambda: relay.accepted == 1, "the first delivery reaching the relay")
    assert finishes(second)
    assert finishes(third)
    relay.end_held()
    wait_for(lambda: relay.accepted == 2, "the queued mail's one attempt reaching the relay")
    relay.end_held()
    assert finishes(lambda: drain_outbox(app)), "a queued message cost a hung attempt of its own"
    assert relay.accepted == 2
    assert sorted(attempts(app).values()) == [(0, True), (1, True), (1, True)]


def test_the_prune_jobs_mail_retry_holds_no_request_thread(
    relay: StalledRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message due for its retry, and the first request after a ``prune_interval``: the
    opportunistic prune runs after that response, on the request's thread, and hands the retry
    to the mail delivery thread instead of talking to the relay itself."""
    monkeypatch.setattr(notifications, "SMTP_TIMEOUT", FOR_EVER)
    monkeypatch.setattr(notifications, "SMTP_DEADLINE", FOR_EVER)
    with app_on("sqlite", tmp_path, smtp_url=relay.url(), prune_interval=600) as app:
        with app.app_context():  # a statement of its own: not the context's to deliver
            db.session.execute(insert(OutboxMessage).values(
                recipient="ada@example.com", kind="password_changed", subject="Retried",
                body="b", details={}, attempts=1, next_attempt_at=utcnow() - timedelta(minutes=1),
            ))  # fmt: skip
            db.session.commit()

        def request() -> None:
            response = app.test_client().get("/.well-known/openid-configuration")
            assert response.status_code == 200
            response.close()  # the prune job runs here, where a WSGI server closes it

        assert finishes(request), "the prune job's retry held the request's thread"
        wait_for(lambda: relay.accepted == 1, "the retry reaching the relay")
        relay.end_held()
        assert finishes(lambda: drain_outbox(app))
        assert attempts(app) == {"ada@example.com": (2, True)}  # failed again, kept for later


def test_a_mail_relay_that_trickles_its_greeting_is_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each byte comes well within the read timeout, the greeting never ends: the conversation
    is cut at ``SMTP_DEADLINE`` and the delivery fails (to be retried), not held for ever."""
    monkeypatch.setattr(notifications, "SMTP_TIMEOUT", FOR_EVER)
    monkeypatch.setattr(notifications, "SMTP_DEADLINE", 0.5)
    relay = StalledRelay(trickle=True)
    mailer = notifications.Mailer(relay.url(), "idp@localhost")
    message = Pending(id=1, channel="mail", kind="password_changed", user_id=None,
                      recipient="ada@example.com", subject="s", body="b", details={})  # fmt: skip
    failures: list[DeliveryError] = []

    def send() -> None:
        try:
            mailer.send(message)
        except DeliveryError as error:
            failures.append(error)

    try:
        assert finishes(send), "the trickling relay held the delivery"
    finally:
        relay.close()
    assert [str(f) for f in failures] == ["TimeoutError"]
    assert relay.accepted == 1
