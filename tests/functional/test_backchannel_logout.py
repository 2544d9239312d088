"""OpenID Connect Back-Channel Logout 1.0 (docs/integrating.md, "Back-channel logout"): every way
a session ends tells each client that received tokens in it, and no other, with a logout token a
relying party can verify; delivery is after the commit, off the request, retried, and claimed
once. The receiver is a real HTTP server (tests.support.logout_receiver)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.composition import services
from idp.extensions import db
from idp.models import BrowserSession, Client, Grant, GroupMember, OutboxMessage, User
from idp.models.base import utcnow
from idp.services import backchannel_logout
from idp.services.groups import GroupService
from idp.services.outbox import (
    FIRST_RETRY,
    DeliveryError,
    Pending,
    UndeliverableError,
    deliver,
    deliver_due,
    take_committed,
)
from idp.services.sessions import end_sessions
from idp.web.background import drain_outbox
from tests.functional.test_groups_concurrency import _backend_pid, _wait_until_blocked, pg_app
from tests.support.admin import passkey_browser
from tests.support.counted import counted
from tests.support.factories import CreatedUser, RegisteredClient, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token, jwt_parts, start_session
from tests.support.live import free_port
from tests.support.logout_receiver import LogoutReceiver, logout_receiver, verify_logout_token
from tests.support.socket_server import ThreadedSocketServer

__all__ = ["pg_app"]  # the PostgreSQL app fixture, shared with the groups' concurrency tests


@pytest.fixture
def receiver() -> Iterator[LogoutReceiver]:
    with logout_receiver() as running:
        yield running


def drain(app: Flask) -> None:
    """Every delivery handed to the node's delivery thread was attempted."""
    drain_outbox(app)


def verified(app: Flask, token: str, registered: RegisteredClient, alg: str = "RS256") -> Any:
    jwks = app.test_client().get("/jwks").get_json()
    issuer = app.extensions["idp"].settings.issuer
    return verify_logout_token(token, jwks, issuer=issuer, client_id=registered.client_id, alg=alg)


def sid_of(tokens: dict[str, Any]) -> str:
    sid: str = jwt_parts(tokens["id_token"])[1]["sid"]
    return sid


def logout_rows(app: Flask) -> list[OutboxMessage]:
    return rows(app, OutboxMessage, OutboxMessage.channel == "http")


def test_discovery_announces_back_channel_logout_with_sid(client: FlaskClient) -> None:
    """Back-Channel Logout 1.0 section 2.1."""
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True
    assert metadata["frontchannel_logout_supported"] is False


def test_rp_initiated_logout_tells_each_client_of_the_session_and_no_other(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    two = create_client(app, backchannel_logout_uri=receiver.url("/two"), id_token_alg="ES256")
    elsewhere = create_client(app, backchannel_logout_uri=receiver.url("/elsewhere"))
    silent = create_client(app)  # no back-channel logout URI: nothing to tell
    tokens = RelyingParty(client, one).tokens_for(user)
    RelyingParty(client, two).tokens_for(user, scope="openid")
    RelyingParty(client, silent).tokens_for(user)
    # The same user's session on another device, at a client this session never used; and
    # another user's session at the same client.
    RelyingParty(app.test_client(), elsewhere).tokens_for(user)
    other = create_user(app, email="grace@example.com")
    RelyingParty(app.test_client(), one).tokens_for(other)

    response = client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200, response.text
    drain(app)

    [to_one] = receiver.tokens("/one")
    [to_two] = receiver.tokens("/two")
    assert receiver.tokens("/elsewhere") == []
    assert len(receiver.deliveries) == 2
    assert {d.content_type for d in receiver.deliveries} == {"application/x-www-form-urlencoded"}
    first = verified(app, to_one, one)
    # Signed as the client's ID tokens are: ES256 for this one (section 2.4).
    second = verified(app, to_two, two, alg="ES256")
    assert first["sid"] == second["sid"] == sid_of(tokens)
    assert first["sub"] == second["sub"] == user.id
    assert first["jti"] != second["jti"]
    assert [row.sent_at is not None for row in logout_rows(app)] == [True, True]


def test_a_logout_token_is_dated_by_the_application_s_clock(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser, clock: FrozenClock
) -> None:
    """Section 2.4: ``iat`` and ``exp`` on the one clock every other token and decision reads
    (idp.clock), not the system's: under a frozen clock moved a day on, the logout token is dated
    then, as the ID token of the session it ends was."""
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    tokens = RelyingParty(client, one).tokens_for(user)
    clock.advance(timedelta(days=1))
    response = client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200, response.text
    drain(app)
    [token] = receiver.tokens("/one")
    claims = jwt_parts(token)[1]
    now = int(clock.now().timestamp())
    assert (claims["iat"], claims["exp"]) == (now, now + backchannel_logout.LOGOUT_TOKEN_TTL)


def test_signing_out_in_the_portal_tells_the_clients_of_the_session(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    tokens = RelyingParty(client, one).tokens_for(user)
    page = client.get("/account")
    response = client.post("/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"})
    assert response.status_code == 200, response.text
    drain(app)
    [token] = receiver.tokens("/one")
    assert verified(app, token, one)["sid"] == sid_of(tokens)


def test_a_session_revoked_in_the_portal_tells_its_clients_and_ends_its_grants(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    rp = RelyingParty(client, one)
    tokens = rp.tokens_for(user, scope="openid profile")
    offline = rp.tokens_for(user, scope="openid offline_access")
    laptop = app.test_client()
    start_session(laptop, user)  # the user's other device, with no app of its own
    page = laptop.get("/account/sessions")
    response = laptop.post(
        f"/account/sessions/{sid_of(tokens)}/revoke",
        data={"csrf_token": csrf_token(page.text), "confirm": "yes"},
    )
    assert response.status_code in (302, 303), response.text
    drain(app)
    # One token for the session, though the client holds two grants in it.
    [token] = receiver.tokens("/one")
    claims = verified(app, token, one)
    assert claims["sid"] == sid_of(tokens)
    # The session's grants end with it, as at RP-initiated logout; offline access outlives it.
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert rp.refresh(offline["refresh_token"]).status_code == 200


def test_console_session_revoke_disable_and_delete_tell_the_clients_of_each_session(
    app: Flask, receiver: LogoutReceiver
) -> None:
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    admin = passkey_browser(app, "root@example.com")
    RelyingParty(admin.browser, one)  # the admin's own session has no app: never announced
    sessions: dict[str, tuple[CreatedUser, str]] = {}
    for action in ("revoke", "disable", "delete"):
        user = create_user(app, email=f"{action}@example.com")
        tokens = RelyingParty(app.test_client(), one).tokens_for(user)
        sessions[action] = (user, sid_of(tokens))
    revoked, sid = sessions["revoke"]
    assert admin.post(f"/admin/users/{revoked.id}/sessions/revoke", {"sid": sid}).status_code < 400
    disabled, _ = sessions["disable"]
    assert admin.post(f"/admin/users/{disabled.id}/disable").status_code < 400
    deleted, _ = sessions["delete"]
    answer = admin.post(f"/admin/users/{deleted.id}/delete", {"confirm": deleted.email})
    assert answer.status_code < 400
    drain(app)
    announced = {
        (claims["sub"], claims["sid"])
        for claims in (verified(app, token, one) for token in receiver.tokens("/one"))
    }
    assert announced == {(user.id, sid) for user, sid in sessions.values()}
    assert len(receiver.deliveries) == 3


def test_a_receiver_that_is_down_gets_the_token_once_it_is_back_and_the_console_shows_it(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    port = free_port()
    down = create_client(app, backchannel_logout_uri=f"http://127.0.0.1:{port}/logout")
    tokens = RelyingParty(client, down).tokens_for(user)
    failed_before = _count("http", "failed")
    client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    drain(app)
    [row] = logout_rows(app)
    assert row.sent_at is None
    assert row.attempts == 1
    assert row.last_error is not None
    assert "could not reach" in row.last_error
    assert _count("http", "failed") == failed_before + 1
    admin = passkey_browser(app, "root@example.com")
    page = admin.browser.get(f"/admin/clients/{down.client_id}")
    assert 'id="logout-failures"' in page.text
    assert "could not reach" in page.text

    with logout_receiver(port) as back, app.app_context():
        # Not due yet: the backoff holds it (the prune job runs the retries).
        assert deliver_due(db.session(), services().outbox_channels(), utcnow()) == 0
        later = utcnow() + FIRST_RETRY + timedelta(seconds=1)
        assert deliver_due(db.session(), services().outbox_channels(), later) == 1
        [token] = back.tokens("/logout")
    assert verified(app, token, down)["sid"] == sid_of(tokens)
    [row] = logout_rows(app)
    assert row.sent_at is not None
    assert row.attempts == 2
    page = admin.browser.get(f"/admin/clients/{down.client_id}")
    assert re.search(r"Delivered \d\d:\d\d:\d\d", page.text)


def _count(channel: str, outcome: str) -> float:
    return counted("idp_outbox_deliveries_total", channel=channel, outcome=outcome)


def test_a_receiver_that_hangs_does_not_hold_up_any_sign_out(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # The relying party is held by the test, not by a clock: no read timeout may end it first.
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 120)
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    first = RelyingParty(client, one).tokens_for(user)
    other = create_user(app, email="grace@example.com")
    other_browser = app.test_client()
    second = RelyingParty(other_browser, one).tokens_for(other)
    receiver.answer.clear()

    response = client.get("/logout", query_string={"id_token_hint": first["id_token"]})
    assert response.status_code == 200
    assert receiver.holding.wait(60), "the first logout token never reached the relying party"
    # The relying party still holds the first delivery: another sign-out is answered all the same,
    # and the held delivery neither failed nor finished (it is not done inside a request).
    response = other_browser.get("/logout", query_string={"id_token_hint": second["id_token"]})
    assert response.status_code == 200
    assert "signed out" in response.text
    assert [(r.sent_at, r.last_error) for r in logout_rows(app)] == [(None, None), (None, None)]

    receiver.answer.set()
    drain(app)
    announced = {verified(app, token, one)["sub"] for token in receiver.tokens("/one")}
    assert announced == {user.id, other.id}


def test_a_redirect_is_a_failure_and_is_never_followed(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    receiver.answers["/moved"] = (307, receiver.url("/elsewhere"))
    moved = create_client(app, backchannel_logout_uri=receiver.url("/moved"))
    tokens = RelyingParty(client, moved).tokens_for(user)
    client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    drain(app)
    assert [d.path for d in receiver.deliveries] == ["/moved"]
    [row] = logout_rows(app)
    assert row.sent_at is None
    assert row.last_error == "the relying party answered HTTP 307"


def test_a_session_ended_twice_is_announced_once_and_a_row_is_delivered_once(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """Two requests (or nodes) ending the same session: one conditional UPDATE wins, one row is
    queued; two deliveries of that row (a retry racing the first attempt): one claim wins."""
    app = storage_app
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    user = create_user(app)
    tokens = RelyingParty(app.test_client(), one).tokens_for(user)
    with app.app_context():
        condition = BrowserSession.sid == sid_of(tokens)
        assert end_sessions(db.session(), condition, "test", utcnow()) == 1
        assert end_sessions(db.session(), condition, "test", utcnow()) == 0
        db.session.commit()
        ids = take_committed(db.session())["http"]
        assert len(ids) == 1
        now = utcnow()
        assert deliver(db.session(), services().outbox_channels(), ids, now) == 1
        assert deliver(db.session(), services().outbox_channels(), ids, now) == 0
    assert len(receiver.tokens("/one")) == 1
    with app.app_context():
        grant = db.session.scalar(select(Grant).where(Grant.sid == sid_of(tokens)))
        assert grant is not None
        assert grant.revoked_at is None


def test_two_transactions_ending_one_session_at_once_announce_it_once(
    pg_app: Flask, receiver: LogoutReceiver
) -> None:
    """PostgreSQL, held in flight: the first transaction ended the session (not committed); the
    second, which saw it live, is seen waiting on its row lock; then the first commits. The
    second's conditional UPDATE then matches nothing: it neither ends nor announces it again."""
    app = pg_app
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    user = create_user(app)
    tokens = RelyingParty(app.test_client(), one).tokens_for(user)
    condition = BrowserSession.sid == sid_of(tokens)
    with app.app_context():
        engine = db.engine
    first, second = Session(engine), Session(engine)
    ended: dict[str, Any] = {}
    try:
        assert end_sessions(first, condition, "test", utcnow()) == 1
        first.flush()
        pid = _backend_pid(second)

        def run_second() -> None:
            ended["second"] = end_sessions(second, condition, "test", utcnow())
            second.commit()

        worker = threading.Thread(target=run_second)
        worker.start()
        _wait_until_blocked(engine, pid, worker)
        first.commit()
        worker.join(60)
        assert not worker.is_alive()
    finally:
        first.close()
        second.close()
    assert ended == {"second": 0}
    assert len(logout_rows(app)) == 1


def test_a_plain_http_uri_from_development_is_never_used_by_a_real_issuer(
    app: Flask, receiver: LogoutReceiver
) -> None:
    """Section 2.2's rule is checked at each delivery too: a loopback http URI registered while
    the issuer was on loopback gets nothing once the issuer is a real (https) one."""
    dev = create_client(app, backchannel_logout_uri=receiver.url("/dev"))
    pending = Pending(
        id=0, channel="http", kind=backchannel_logout.KIND, user_id="u", recipient=dev.client_id,
        subject="", body="", details={"sid": "s", "sub": "u"},
    )  # fmt: skip
    with app.app_context():
        keys = app.extensions["idp"].keys
        sender = backchannel_logout.BackchannelSender(db.session(), keys, "https://idp.example")
        with pytest.raises(UndeliverableError):
            sender.send(pending)
        backchannel_logout.BackchannelSender(db.session(), keys, "http://localhost").send(pending)
    assert len(receiver.tokens("/dev")) == 1


class Trickler(ThreadedSocketServer):
    """A relying party answering 200 a byte every 50 ms, ten seconds for the whole answer: each
    read is well within any read timeout, the answer far beyond the delivery's deadline."""

    def handle(self, connection: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 160 + b"\r\nContent-Length: 0\r\n\r\n"
        with contextlib.suppress(OSError), connection:
            connection.recv(65536)
            for byte in answer:
                connection.sendall(bytes([byte]))
                time.sleep(0.05)


def test_a_relying_party_trickling_its_answer_is_cut_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/integrating.md: no whole answer within the deadline is a failure, however steadily
    the bytes come; the node's delivery thread is not held for the trickle."""
    monkeypatch.setattr(backchannel_logout, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(backchannel_logout, "READ_TIMEOUT", 0.5)
    server = Trickler()
    try:
        with pytest.raises(DeliveryError):
            backchannel_logout.post_logout_token(
                f"http://127.0.0.1:{server.port}/bc", "token", development=True
            )
    finally:
        server.close()


def test_a_fault_delivering_to_one_client_holds_up_no_other_and_is_recorded(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A delivery that raises something else than a delivery failure (a host name registered
    before it was checked, a bug, a missing key) is recorded as failed and retried like one; the
    other clients of the session get their tokens, and the prune job's retry raises nothing."""
    posted = backchannel_logout.post_logout_token

    def faulty(uri: str, token: str, *, development: bool) -> None:
        if uri.endswith("/faulty"):
            raise LookupError("no key for the client's algorithm")
        posted(uri, token, development=development)

    monkeypatch.setattr(backchannel_logout, "post_logout_token", faulty)
    bad = create_client(app, backchannel_logout_uri=receiver.url("/faulty"))
    good = create_client(app, backchannel_logout_uri=receiver.url("/good"))
    tokens = RelyingParty(client, bad).tokens_for(user)
    RelyingParty(client, good).tokens_for(user)
    assert client.get("/logout", query_string={"id_token_hint": tokens["id_token"]}).status_code
    drain(app)
    assert len(receiver.tokens("/good")) == 1
    by_client = {row.recipient: row for row in logout_rows(app)}
    assert by_client[bad.client_id].sent_at is None
    assert by_client[bad.client_id].last_error == "internal error: LookupError"
    with app.app_context():
        later = utcnow() + FIRST_RETRY + timedelta(seconds=1)
        assert deliver_due(db.session(), services().outbox_channels(), later) == 0
    assert logout_rows(app)[0].attempts + logout_rows(app)[1].attempts == 3


def test_another_user_signing_in_in_the_browser_ends_the_session_and_tells_its_clients(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    """A shared computer: the next person's sign-in ends the previous one's session as every
    ending does (``end_sessions``): what it authorised ends, and its clients are told."""
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    rp = RelyingParty(client, one)
    tokens = rp.tokens_for(user, scope="openid profile")
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    start_session(client, create_user(app, email="grace@example.com"))
    drain(app)
    [token] = receiver.tokens("/one")
    assert verified(app, token, one)["sid"] == sid_of(tokens)
    assert rp.userinfo(tokens["access_token"]).status_code == 401


def test_the_same_user_signing_in_again_continues_the_session_at_idp(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    """A step-up or ``prompt=login`` renews the cookie and keeps the session's ``sid``: its
    tokens and clients stay its own, and ending it later (here, "sign out everywhere" from
    another browser) ends them and tells the clients with the ``sid`` they know."""
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    rp = RelyingParty(client, one)
    tokens = rp.tokens_for(user, scope="openid profile")
    cookie_before = client.get_cookie("idp_session")
    start_session(client, user)
    assert client.get_cookie("idp_session") != cookie_before  # a new cookie: no fixation
    drain(app)
    assert receiver.tokens("/one") == []
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    again = RelyingParty(client, one).tokens_for(user, scope="openid profile")
    assert sid_of(again) == sid_of(tokens)

    laptop = app.test_client()
    start_session(laptop, user)
    page = laptop.get("/account/sessions")
    revoked = laptop.post("/account/sessions/revoke-others",
                          data={"csrf_token": csrf_token(page.text)})  # fmt: skip
    assert revoked.status_code == 302
    drain(app)
    assert {verified(app, t, one)["sid"] for t in receiver.tokens("/one")} == {sid_of(tokens)}
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert rp.userinfo(again["access_token"]).status_code == 401


def test_disconnecting_an_app_tells_it_for_each_session_it_received_tokens_in(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    """Disconnect (the account page's Connected apps, or an admin on the user's page) ends the
    app's grants; the app's own session of the user, which rests on an ID token of that ``sid``,
    lived on at the relying party though the user had just taken its access away. The app is
    told now, once per session it received tokens in (Back-Channel Logout 1.0 2.7), here the
    browser's and a phone's offline grant; another app of the same session is not, and the
    session at idp goes on."""
    one = create_client(app, backchannel_logout_uri=receiver.url("/one"))
    two = create_client(app, backchannel_logout_uri=receiver.url("/two"))
    here = RelyingParty(client, one).tokens_for(user, scope="openid profile")
    RelyingParty(client, two).tokens_for(user, scope="openid profile")
    phone = RelyingParty(app.test_client(), one).tokens_for(user, scope="openid offline_access")
    page = client.get("/account/apps")
    form = {"csrf_token": csrf_token(page.text), "confirm": "yes"}
    response = client.post(f"/account/apps/{one.client_id}/revoke", data=form)
    assert response.status_code == 302, response.text
    drain(app)
    told = [verified(app, token, one) for token in receiver.tokens("/one")]
    announced = {(claims["sid"], claims["sub"]) for claims in told}
    assert announced == {(sid_of(here), user.id), (sid_of(phone), user.id)}
    assert len(receiver.tokens("/one")) == 2
    assert receiver.tokens("/two") == []
    assert client.get("/account").status_code == 200  # still signed in at idp


class Hanging(ThreadedSocketServer):
    """A relying party that takes each connection and closes it unanswered, counting them."""

    def __init__(self) -> None:
        self.connections = 0
        super().__init__()

    def handle(self, connection: socket.socket) -> None:
        self.connections += 1
        with contextlib.suppress(OSError), connection:
            connection.recv(65536)


def test_a_failing_relying_party_costs_one_attempt_per_run_and_holds_up_no_other(
    app: Flask, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    """The back-channel deliveries share one thread per node: a relying party that is down or
    hangs cost a timeout for each of its tokens (up to 8 seconds), and every other relying
    party's tokens waited behind them, the session going on there meanwhile. After its first
    failure in a run, its other tokens are left due for the next run, unclaimed; the other
    clients' tokens are delivered now."""
    hanging = Hanging()
    try:
        down = create_client(app, backchannel_logout_uri=f"http://127.0.0.1:{hanging.port}/bc")
        up = create_client(app, backchannel_logout_uri=receiver.url("/up"))
        for _ in range(3):  # three sessions, each with tokens of the client that is down
            browser = app.test_client()
            RelyingParty(browser, down).tokens_for(user)
        RelyingParty(browser, up).tokens_for(user)  # and the last one with the other client's
        with app.app_context():
            assert end_sessions(db.session(), BrowserSession.user_id == user.id, "t", utcnow()) == 3
            db.session.commit()
            ids = sorted(take_committed(db.session())["http"])
            channels = services().outbox_channels()
            assert deliver(db.session(), channels, ids, utcnow(), stop_on_failure=True) == 1
        assert hanging.connections == 1
        assert len(receiver.tokens("/up")) == 1
        left = [row for row in logout_rows(app) if row.recipient == down.client_id]
        assert sorted(row.attempts for row in left) == [0, 0, 1]
        assert all(row.sent_at is None for row in left)
        assert up.client_id not in {row.recipient for row in left}
    finally:
        hanging.close()


def _disconnect(browser: FlaskClient, registered: RegisteredClient) -> None:
    page = browser.get("/account")  # a first-party app without offline access is not listed
    form = {"csrf_token": csrf_token(page.text), "confirm": "yes"}
    response = browser.post(f"/account/apps/{registered.client_id}/revoke", data=form)
    assert response.status_code == 302, response.text


def _sign_out(browser: FlaskClient) -> None:
    page = browser.get("/account")
    response = browser.post("/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"})
    assert response.status_code == 200, response.text


def test_a_session_end_tells_the_clients_it_logged_in_to_and_none_a_second_time(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """Back-Channel Logout 1.0 2.7: the OP tells "the RPs that the session had logged in to".
    The session's end told every client with a grant of its ``sid``: an app the user had
    disconnected, already told then (its grant revoked and announced), was told a second time;
    an app that only received a code it never exchanged (no ID token, no session of its own)
    was told too. Now neither is; an app disconnected and then signed in to again in the same
    session is told at the disconnection and at the end, and one still connected once. On
    SQLite and PostgreSQL."""
    app = storage_app
    user = create_user(app)
    browser = app.test_client()
    clients = {
        name: create_client(app, name=name, backchannel_logout_uri=receiver.url(f"/{name}"))
        for name in ("gone", "live", "code", "back")
    }
    sessions = {name: RelyingParty(browser, c) for name, c in clients.items()}
    sid = sid_of(sessions["gone"].tokens_for(user, scope="openid profile"))
    sessions["live"].tokens_for(user, scope="openid profile")
    sessions["back"].tokens_for(user, scope="openid profile")
    sessions["code"].obtain_code(user, scope="openid profile")  # never exchanged
    _disconnect(browser, clients["gone"])
    _disconnect(browser, clients["back"])
    drain(app)
    assert len(receiver.tokens("/gone")) == 1
    assert len(receiver.tokens("/back")) == 1
    sessions["back"].tokens_for(user, scope="openid profile")  # signed in to it again

    _sign_out(browser)
    drain(app)
    counts = {name: len(receiver.tokens(f"/{name}")) for name in clients}
    assert counts == {"gone": 1, "live": 1, "code": 0, "back": 2}
    for name in ("live", "back"):
        claims = verified(app, receiver.tokens(f"/{name}")[-1], clients[name])
        assert (claims["sid"], claims["sub"]) == (sid, user.id)


def test_a_refresh_refused_for_lost_group_access_tells_the_client_once(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """A refresh the token endpoint refuses because the user left the client's allowed groups
    where no revocation reached the grant (the membership removed on another node's write,
    idp.oidc.group_gate) revokes it as leaving the group does, and tells the client then
    (Back-Channel Logout 1.0 2.7: its session of the user rests on the grant's ID token); the
    session's end does not tell it a second time. On SQLite and PostgreSQL."""
    app = storage_app
    user = create_user(app)
    browser = app.test_client()
    registered = create_client(app, backchannel_logout_uri=receiver.url("/rp"))
    with app.app_context():
        groups = GroupService(db.session())
        group = groups.create("staff")
        groups.add_members(group, [db.session.get(User, user.id)])
        groups.set_allowed_groups(db.session.get(Client, registered.client_id), ["staff"])
        db.session.commit()
    rp = RelyingParty(browser, registered)
    tokens = rp.tokens_for(user, scope="openid offline_access")
    with app.app_context(), db.engine.begin() as connection:  # as another node would
        members = GroupMember.__table__
        connection.execute(delete(members).where(members.c.user_id == user.id))
    refused = rp.refresh(tokens["refresh_token"])
    assert refused.status_code == 400, refused.text
    assert refused.get_json()["error"] == "invalid_grant"
    drain(app)
    [told] = receiver.tokens("/rp")
    assert verified(app, told, registered)["sid"] == sid_of(tokens)
    (grant,) = rows(app, Grant)
    assert grant.revoked_reason == "group_access_removed"

    _sign_out(browser)
    drain(app)
    assert len(receiver.tokens("/rp")) == 1
