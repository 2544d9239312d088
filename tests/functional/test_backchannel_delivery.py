"""Back-channel logout deliveries, bounded and parallel (docs/security.md, "Back-channel logout"):
a relying party whose name server never answers fails at the delivery's deadline, and one that
hangs holds up no other relying party's token. Each relying party is a real HTTP server
(tests.support.logout_receiver); what hangs is held by an event the test controls."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from flask import Flask

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


def test_deliveries_in_parallel_are_bounded(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run holds at most ``PARALLEL_DELIVERIES`` conversations at once, each a thread of the
    node's, however many relying parties a session had: counted where the run waits for them,
    after it started all it may."""
    monkeypatch.setattr(outbox, "PARALLEL_DELIVERIES", 2)
    waited_on: list[int] = []
    real_wait = outbox.wait

    def counting_wait(futures: Any, **kwargs: Any) -> Any:
        waited_on.append(len(futures))
        return real_wait(futures, **kwargs)

    monkeypatch.setattr(outbox, "wait", counting_wait)
    channel = Instant()
    with app.app_context():
        now = utcnow()
        queued: dict[str, Any] = {"kind": "test", "channel": Instant.name, "subject": "",
                                  "body": "", "details": {}, "created_at": now, "attempts": 0,
                                  "next_attempt_at": now}  # fmt: skip
        messages = [OutboxMessage(recipient=f"rp-{index}", **queued) for index in range(5)]
        db.session.add_all(messages)
        db.session.commit()
        ids = [message.id for message in messages]
        take_committed(db.session())
        assert deliver(db.session(), [channel], ids, now) == 5
    assert sorted(channel.delivered) == [f"rp-{index}" for index in range(5)]
    assert max(waited_on) == 2
