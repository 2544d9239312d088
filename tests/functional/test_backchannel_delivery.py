"""Back-channel logout deliveries, bounded (docs/security.md, "Back-channel logout"): a relying
party whose name server never answers fails at the delivery's deadline. Each relying party is a
real HTTP server (tests.support.logout_receiver); what hangs is held by an event the test
controls."""

from __future__ import annotations

import pytest
from flask import Flask

from idp.composition import services
from idp.extensions import db
from idp.models import BrowserSession, OutboxMessage
from idp.models.base import utcnow
from idp.services import backchannel_logout
from idp.services.outbox import deliver, take_committed
from idp.services.sessions import end_sessions
from tests.support.factories import create_client, create_user, rows
from tests.support.flow import RelyingParty
from tests.support.held_resolver import held_lookups
from tests.support.live import free_port
from tests.support.logout_receiver import logout_receiver


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
