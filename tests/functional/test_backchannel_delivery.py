"""Back-channel logout deliveries, bounded and parallel (docs/security.md, "Back-channel logout"):
a relying party whose name server never answers fails at the delivery's deadline, and one that
hangs holds up no other relying party's token. Each relying party is a real HTTP server
(tests.support.logout_receiver); what hangs is held by an event the test controls."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
from flask import Flask
from sqlalchemy import event

from idp.composition import services
from idp.extensions import db
from idp.models import BrowserSession, OutboxMessage
from idp.models.base import utcnow
from idp.services import backchannel_logout, outbox
from idp.services.outbox import Pending, deliver, take_committed
from idp.services.sessions import end_sessions
from idp.web.background import drain_outbox
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty, jwt_parts
from tests.support.held_resolver import held_lookups
from tests.support.live import free_port
from tests.support.logout_receiver import logout_receiver, verify_logout_token


def logout_rows(app: Flask) -> list[OutboxMessage]:
    return rows(app, OutboxMessage, OutboxMessage.channel == "http")


def test_a_relying_party_whose_name_server_never_answers_fails_at_the_deadline(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline's timer cuts a socket, and there is none while the resolver is asked: a
    relying party whose name server never answers held the run for the resolver's own timeout.
    The lookup gets the delivery's deadline: that delivery fails then, kept for a retry like any
    failure, while its lookup is still held; the other relying party has its token."""
    app = storage_app
    monkeypatch.setattr(backchannel_logout, "CONNECT_TIMEOUT", 1)
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 1)
    user = create_user(app)
    with logout_receiver() as receiver, held_lookups(monkeypatch, "localhost") as resolver:
        silent = create_client(app, backchannel_logout_uri=f"http://localhost:{free_port()}/bc")
        good = create_client(app, backchannel_logout_uri=receiver.url("/good"))
        browser = app.test_client()
        RelyingParty(browser, silent).tokens_for(user)
        RelyingParty(browser, good).tokens_for(user)
        with app.app_context():
            assert end_sessions(db.session(), BrowserSession.user_id == user.id, "t", utcnow()) == 1
            db.session.commit()
            ids = take_committed(db.session())["http"]
            channels = services().outbox_channels()
            assert deliver(db.session(), channels, ids, utcnow(), stop_on_failure=True) == 1
        assert resolver.asked.is_set()
        assert not resolver.answered.is_set(), "the delivery waited for the resolver"
        assert len(receiver.tokens("/good")) == 1
    by_client = {row.recipient: row for row in logout_rows(app)}
    failed = by_client[silent.client_id]
    assert (failed.sent_at, failed.attempts) == (None, 1)
    assert failed.last_error == "the host did not resolve within 2 seconds"
    assert failed.next_attempt_at is not None  # retried, as other failures are
    assert by_client[good.client_id].sent_at is not None


def test_a_relying_party_that_hangs_holds_up_no_other_relying_partys_token(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-Channel Logout 1.0 2.5-2.8: every relying party of the session is told. Delivered
    one after the other, the token queued first went to a relying party that hangs, and every
    other waited behind it until its deadline. Each relying party is delivered on its own: the
    others have their tokens while the first is still held; each gets one, once."""
    # The relying party is held by the test, not by a clock: no read timeout may end it first.
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 120)
    app = storage_app
    user = create_user(app)
    browser = app.test_client()
    with contextlib.ExitStack() as stack:
        receivers = [stack.enter_context(logout_receiver()) for _ in range(3)]
        clients = [create_client(app, backchannel_logout_uri=r.url("/bc")) for r in receivers]
        for registered in clients:
            tokens = RelyingParty(browser, registered).tokens_for(user)
        # The client whose token is queued first (backchannel_logout.announce queues by client).
        first = min(range(len(clients)), key=lambda index: clients[index].client_id)
        held = receivers[first]
        held.answer.clear()

        response = browser.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
        assert response.status_code == 200, response.text
        assert held.holding.wait(60), "the first logout token never reached its relying party"
        for receiver in receivers:
            if receiver is not held:
                receiver.wait_for(1)
        assert not held.answer.is_set()
        assert held.deliveries == []  # still held while the others were told

        held.answer.set()
        drain_outbox(app)
    issuer = app.extensions["idp"].settings.issuer
    jwks = app.test_client().get("/jwks").get_json()
    for receiver, registered in zip(receivers, clients, strict=True):
        [token] = receiver.tokens("/bc")
        claims = verify_logout_token(
            token, jwks, issuer=issuer, client_id=registered.client_id, alg="RS256"
        )
        assert claims["sid"] == jwt_parts(tokens["id_token"])[1]["sid"]
    assert [(row.sent_at is not None, row.attempts) for row in logout_rows(app)] == [(True, 1)] * 3


class Instant:
    """An outbox channel whose conversations end at once, one recipient per row."""

    name: ClassVar[str] = "test"
    stop_after_failure: ClassVar[bool] = False

    def __init__(self) -> None:
        self.delivered: list[str] = []

    def prepare(self, message: Pending) -> Callable[[], None]:
        return lambda: self.delivered.append(message.recipient)


def queue_rows(count: int, now: datetime, channel: str = Instant.name) -> list[int]:
    """``count`` rows of ``channel`` (the ``Instant`` one), each to its own recipient; their
    ids."""
    queued: dict[str, Any] = {"kind": "test", "channel": channel, "subject": "", "body": "",
                              "details": {}, "created_at": now, "attempts": 0,
                              "next_attempt_at": now}  # fmt: skip
    messages = [OutboxMessage(recipient=f"rp-{index}", **queued) for index in range(count)]
    db.session.add_all(messages)
    db.session.commit()
    take_committed(db.session())
    return [message.id for message in messages]


def test_deliveries_in_parallel_are_bounded(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run holds at most ``PARALLEL_DELIVERIES`` conversations at once, each a thread of the
    node's, however many relying parties a session had: counted where the run waits for one to
    end, after it started all it may."""
    monkeypatch.setattr(outbox, "PARALLEL_DELIVERIES", 2)
    waited_with: list[int] = []
    real_settle = outbox.DeliveryRun.settle

    def counting_settle(run: outbox.DeliveryRun, *, block: bool) -> None:
        if block:
            waited_with.append(run.in_flight)
        real_settle(run, block=block)

    monkeypatch.setattr(outbox.DeliveryRun, "settle", counting_settle)
    channel = Instant()
    with app.app_context():
        now = utcnow()
        ids = queue_rows(5, now)
        assert deliver(db.session(), [channel], ids, now) == 5
    assert sorted(channel.delivered) == [f"rp-{index}" for index in range(5)]
    assert max(waited_with) == 2


def test_the_rows_handed_to_a_run_are_read_in_batches(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows handed to a run are sorted into lanes by reading them, ``LANE_READ_BATCH`` ids
    per statement: a backlog handed at once (the lists queued behind a delivery, a node's
    retries) made one statement with an IN list as long as the backlog. Each row is delivered
    all the same."""
    monkeypatch.setattr(outbox, "LANE_READ_BATCH", 2)
    reads: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("SELECT outbox_messages.id, outbox_messages.channel"):
            reads.append(statement)

    channel = Instant()
    with storage_app.app_context():
        now = utcnow()
        ids = queue_rows(5, now)
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            assert deliver(db.session(), [channel], ids, now) == 5
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    assert len(reads) == 3, reads
    assert sorted(channel.delivered) == [f"rp-{index}" for index in range(5)]


def test_a_relying_party_that_hangs_holds_up_no_later_token_of_another(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-Channel Logout 1.0 2.5-2.8: every relying party is told. The node's delivery thread
    waited for each run's slowest conversation before it took the next list: a relying party
    hanging until its deadline (8 s) held up the tokens of sign-outs after it, to every other
    relying party. A list submitted while a conversation is in flight joins the run at once;
    the relying party in flight gets its newer token after its first ends, one conversation at
    a time; each row's claim and outcome stay on the run's thread (its session), never on a
    conversation's."""
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 120)  # held by the test alone
    app = storage_app
    user = create_user(app)
    threads: set[str] = set()

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "outbox_messages" in statement:
            threads.add(threading.current_thread().name)

    with logout_receiver() as slow_rp, logout_receiver() as other_rp:
        slow = create_client(app, backchannel_logout_uri=slow_rp.url("/bc"))
        other = create_client(app, backchannel_logout_uri=other_rp.url("/bc"))
        first, second = app.test_client(), app.test_client()
        earlier = RelyingParty(first, slow).tokens_for(user)
        RelyingParty(second, other).tokens_for(user)
        later = RelyingParty(second, slow).tokens_for(user)
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute", record)
        try:
            slow_rp.answer.clear()
            response = first.get("/logout", query_string={"id_token_hint": earlier["id_token"]})
            assert response.status_code == 200, response.text
            assert slow_rp.holding.wait(60), "the first token never reached its relying party"

            response = second.get("/logout", query_string={"id_token_hint": later["id_token"]})
            assert response.status_code == 200, response.text
            other_rp.wait_for(1)  # while the first relying party is still held
            assert slow_rp.deliveries == []

            slow_rp.answer.set()
            slow_rp.wait_for(2)
            drain_outbox(app)
        finally:
            with app.app_context():
                event.remove(db.engine, "before_cursor_execute", record)
        told = [jwt_parts(token)[1]["sid"] for token in slow_rp.tokens("/bc")]
        assert told == [jwt_parts(earlier["id_token"])[1]["sid"],
                        jwt_parts(later["id_token"])[1]["sid"]]  # fmt: skip
        assert slow_rp.most_at_once == 1  # its own tokens one after the other
        assert len(other_rp.tokens("/bc")) == 1
    assert [(row.sent_at is not None, row.attempts) for row in logout_rows(app)] == [(True, 1)] * 3
    assert threads
    assert not any(name.startswith("idp-outbox-send") for name in threads), threads
