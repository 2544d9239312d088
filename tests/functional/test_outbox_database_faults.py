"""The outbox's delivery run against a database that fails for a moment (docs/security.md,
"Faults and degraded dependencies"): the run writes each delivery's outcome as it ends, keeps
what the database refused for its next tick, and never makes twice a delivery it made. The
database is real (SQLite and PostgreSQL); an engine event raises the driver's own
``OperationalError`` once, at a statement the test names, at a moment the test controls."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from flask import Flask
from sqlalchemy import event

from idp.composition import services
from idp.extensions import db
from idp.models import BrowserSession, OutboxMessage
from idp.models.base import utcnow
from idp.services import backchannel_logout, outbox_outcomes
from idp.services.outbox import DeliveryError, Pending, deliver, deliver_due, take_committed
from idp.services.sessions import end_sessions
from idp.web.background import drain_outbox
from tests.functional.test_backchannel_delivery import queue_rows as queued_rows
from tests.support.events import wait_for
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty
from tests.support.logout_receiver import logout_receiver

#: The run's statements: sorting the rows into lanes, a claim, an outcome (sent, failed).
LANES = ("SELECT outbox_messages.id, outbox_messages.channel", "")
CLAIM = ("UPDATE outbox_messages SET attempts", "")
SENT = ("UPDATE outbox_messages SET", " sent_at=")
FAILED = ("UPDATE outbox_messages SET", " last_failure_at=")


class Fault:
    """Raises the driver's ``OperationalError`` at the first statement starting with the
    ``statement``'s first part and holding its second, while ``armed`` holds, once (or at every
    one, with ``once`` False)."""

    def __init__(
        self, statement: tuple[str, str], armed: Callable[[], bool], *, once: bool = True
    ) -> None:
        self.prefix, self.holding = statement
        self.armed = armed
        self.once = once
        self.fired = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith(self.prefix) or self.holding not in statement:
            return
        if not self.armed():
            return
        with self._lock:
            if self.once and self.fired.is_set():
                return
            self.fired.set()
        raise conn.dialect.loaded_dbapi.OperationalError("injected: the server went away")


@contextlib.contextmanager
def fault_in(app: Flask, fault: Fault) -> Iterator[Fault]:
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", fault)
    try:
        yield fault
    finally:
        event.remove(engine, "before_cursor_execute", fault)


def logout_rows(app: Flask) -> list[OutboxMessage]:
    return rows(app, OutboxMessage, OutboxMessage.channel == "http")


def test_a_database_error_while_a_logout_token_is_in_flight_loses_no_sent_outcome(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two relying parties told of one sign-out by the node's delivery thread; one holds its
    answer (an event the test controls) while the other's token is written as sent, and that
    write fails. The run was abandoned: the sent token stayed unwritten and went out again at
    its retry, and the held one's outcome was never written either. Now the sent outcome is
    written on the next tick while the other conversation is still in flight, the held one's
    when it ends, and the retry finds nothing to send: each relying party has one token."""
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 120)  # held by the test alone
    app = storage_app
    user = create_user(app)
    with logout_receiver() as held_rp, logout_receiver() as other_rp:
        held = create_client(app, backchannel_logout_uri=held_rp.url("/bc"))
        other = create_client(app, backchannel_logout_uri=other_rp.url("/bc"))
        browser = app.test_client()
        tokens = RelyingParty(browser, held).tokens_for(user)
        RelyingParty(browser, other).tokens_for(user)
        fault = Fault(SENT, lambda: True)
        with fault_in(app, fault):
            held_rp.answer.clear()
            other_rp.answer.clear()  # both in flight before either outcome is written
            response = browser.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
            assert response.status_code == 200, response.text
            assert held_rp.holding.wait(60), "the held relying party's token never came"
            assert other_rp.holding.wait(60), "the other relying party's token never came"
            other_rp.answer.set()
            other_rp.wait_for(1)
            assert fault.fired.wait(60), "the other token's outcome was never written"

            def other_written() -> bool:
                by_client = {row.recipient: row for row in logout_rows(app)}
                return by_client[other.client_id].sent_at is not None

            wait_for(other_written, "the sent outcome written again while a token is in flight")
            assert held_rp.deliveries == []  # still in flight
            held_rp.answer.set()
            held_rp.wait_for(1)
            drain_outbox(app)
        assert [(row.sent_at is not None, row.attempts) for row in logout_rows(app)] == [
            (True, 1),
            (True, 1),
        ]
        with app.app_context():
            later = utcnow() + timedelta(hours=2)
            assert deliver_due(db.session(), services().outbox_channels(), later) == 0
        assert (len(held_rp.tokens("/bc")), len(other_rp.tokens("/bc"))) == (1, 1)


class Recorded:
    """An outbox channel whose conversations end at once, one recipient per row; the first
    row's conversation fails when ``failing`` names it."""

    name: ClassVar[str] = "test"
    stop_after_failure: ClassVar[bool] = False

    def __init__(self, failing: str = "") -> None:
        self.failing = failing
        self.delivered: list[str] = []

    def prepare(self, message: Pending) -> Callable[[], None]:
        def conversation() -> None:
            if message.recipient == self.failing:
                raise DeliveryError("refused")
            self.delivered.append(message.recipient)

        return conversation


def queue_rows(count: int, now: datetime) -> list[int]:
    return queued_rows(count, now, channel=Recorded.name)


@pytest.mark.parametrize(
    "statement", [LANES, CLAIM, SENT, FAILED], ids=["lanes", "claim", "sent", "failed"]
)
def test_a_transient_database_error_at_any_of_a_runs_statements_abandons_nothing(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch, statement: tuple[str, str]
) -> None:
    """Whichever statement of the run the database refuses once, the run tries it again on its
    next tick: every row is attempted once and its outcome written, and none that was sent goes
    out again at the retry (the refused one is retried). The run raised, leaving the rows after
    it unattempted and a sent row unwritten."""
    monkeypatch.setattr(outbox_outcomes, "RETRY_TICK", 0.01)
    channel = Recorded(failing="rp-1")
    with storage_app.app_context():
        now = utcnow()
        ids = queue_rows(3, now)
        with fault_in(storage_app, Fault(statement, lambda: True)) as fault:
            assert deliver(db.session(), [channel], ids, now) == 2
        assert fault.fired.is_set()
        assert deliver_due(db.session(), [channel], now + timedelta(hours=2)) == 0
    assert sorted(channel.delivered) == ["rp-0", "rp-2"]
    written = {row.recipient: row for row in rows(storage_app, OutboxMessage)}
    assert {name: (row.sent_at is not None, row.attempts, row.last_error)
            for name, row in written.items()} == {
        "rp-0": (True, 1, None), "rp-1": (False, 2, "refused"), "rp-2": (True, 1, None),
    }  # fmt: skip


def test_a_sent_outcome_the_database_never_takes_is_logged_not_dropped(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past ``RECORD_WINDOW`` a run gives an outcome up rather than hold its thread for ever;
    a delivery made and never written as sent is said in the log (it will go out again at its
    retry), where it vanished without a word."""
    monkeypatch.setattr(outbox_outcomes, "RETRY_TICK", 0.01)
    monkeypatch.setattr(outbox_outcomes, "RECORD_WINDOW", 0)
    channel = Recorded()
    with app.app_context():
        now = utcnow()
        ids = queue_rows(1, now)
        fault = Fault(SENT, lambda: True, once=False)
        with caplog.at_level(logging.ERROR), fault_in(app, fault):
            assert deliver(db.session(), [channel], ids, now) == 0
    assert channel.delivered == ["rp-0"]
    [given_up] = [r for r in caplog.records if "could not be recorded as sent" in r.getMessage()]
    assert f"(outbox {ids[0]})" in given_up.getMessage()
    assert given_up.levelno == logging.ERROR


def test_the_end_of_a_session_is_announced_and_delivered_despite_a_failed_claim(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's path (``deliver``): a session ended, its token claimed while the database
    fails once; the claim is tried again on the next tick and the relying party told once."""
    monkeypatch.setattr(outbox_outcomes, "RETRY_TICK", 0.01)
    app = storage_app
    user = create_user(app)
    with logout_receiver() as receiver:
        registered = create_client(app, backchannel_logout_uri=receiver.url("/bc"))
        RelyingParty(app.test_client(), registered).tokens_for(user)
        with app.app_context():
            assert end_sessions(db.session(), BrowserSession.user_id == user.id, "t", utcnow()) == 1
            db.session.commit()
            ids = take_committed(db.session())["http"]
            fault = Fault(CLAIM, lambda: True)
            with fault_in(app, fault):
                channels = services().outbox_channels()
                assert deliver(db.session(), channels, ids, utcnow()) == 1
            assert fault.fired.is_set()
        assert len(receiver.tokens("/bc")) == 1


def test_a_database_that_stays_down_holds_no_run_for_ever(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The run tries a refused claim again on its next tick, and only within ``RECORD_WINDOW``:
    past it (here at once) the rows it could not claim leave the run, still due and unclaimed
    for the prune job's retry, and the log says so, instead of the run (a node's delivery
    thread, ``idp prune``) trying again for as long as the database is down."""
    monkeypatch.setattr(outbox_outcomes, "RETRY_TICK", 0.01)
    monkeypatch.setattr(outbox_outcomes, "RECORD_WINDOW", 0)
    channel = Recorded()
    with storage_app.app_context():
        now = utcnow()
        ids = queue_rows(2, now)
        with (
            caplog.at_level(logging.ERROR),
            fault_in(storage_app, Fault(CLAIM, lambda: True, once=False)),
        ):
            assert deliver(db.session(), [channel], ids, now) == 0
        assert deliver_due(db.session(), [channel], now) == 2  # due, unclaimed: the retry's
    assert any("left for the retry" in r.getMessage() for r in caplog.records)
    assert sorted(channel.delivered) == ["rp-0", "rp-1"]
