"""A Redis that stopped answering (docs/operations.md, "Redis"; docs/security.md, "Faults and
degraded dependencies"): one request pays the 2 s socket timeout, then the worker's circuit
breaker refuses what needs Redis at once, without asking it, for ``BREAKER_OPEN_SECONDS``; then
one request probes, and an answer closes the breaker.

Redis is a private redis-server behind a TCP proxy the test freezes (tests/support/tcp_proxy.py):
frozen, it accepts connections and never answers, and counts what reached it. The breaker's clock
is a counter the test moves: nothing here waits for the breaker's time or measures one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from idp.composition import container
from idp.models import AuditEvent
from idp.models.base import utcnow
from idp.redis_client import BREAKER_OPEN_SECONDS
from idp.unavailable import JSON_ERROR, TITLE
from tests.support.apps import app_on
from tests.support.clock import FrozenClock, app_clock
from tests.support.counted import counted
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token
from tests.support.passkey_flow import csrf_meta
from tests.support.redis_server import private_redis
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

METRICS_TOKEN = "breaker-scrape-" + "b" * 40


class SteppedClock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Flask, TcpProxy, SteppedClock]]:
    """An app whose Redis is reached through a proxy the test can freeze, its breaker on a clock
    the test moves."""
    with (
        private_redis(tmp_path / "redis") as redis_server,
        tcp_proxy("127.0.0.1", redis_server.port) as proxy,
        app_on("sqlite", tmp_path, redis_url=f"redis://127.0.0.1:{proxy.port}/0",
               signup_enabled=True, metrics_token=METRICS_TOKEN) as app,
    ):  # fmt: skip
        clock = SteppedClock()
        container(app).redis_breaker.monotonic = clock
        yield app, proxy, clock


def password_step(browser: FlaskClient, user: CreatedUser) -> TestResponse:
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": user.email, "password": user.password}
    return browser.post("/login", data=form)


def passkey_options(browser: FlaskClient) -> TestResponse:
    token = csrf_meta(browser.get("/login").text)
    return browser.post("/login/passkey/options", json={}, headers={"X-CSRFToken": token})


def signup(browser: FlaskClient) -> TestResponse:
    page = browser.get("/signup")
    form = {"csrf_token": csrf_token(page.text), "email": "newcomer@example.com"}
    return browser.post("/signup", data=form)


def refused(response: TestResponse) -> bool:
    if response.status_code != 503 or response.headers.get("Retry-After") != "5":
        return False
    if response.is_json:
        return bool(response.get_json()["error"] == JSON_ERROR)
    return TITLE in response.text


def test_after_one_timeout_requests_that_need_redis_are_refused_without_asking_it(
    proxied: tuple[Flask, TcpProxy, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    app, proxy, clock = proxied
    user = create_user(app)
    rp = RelyingParty(app.test_client(), create_client(app))
    tokens = rp.tokens_for(user)  # signed in while Redis answered
    browser = app.test_client()
    caplog.clear()  # the sign-in's first count on this new Redis logged that it holds none

    proxy.freeze()
    with caplog.at_level(logging.INFO, logger="idp.services.dependencies"):
        assert refused(password_step(browser, user))  # the one that waits out the timeout
    connections, sent = proxy.held()
    assert connections == 1
    assert sent > 0
    opened = [r for r in caplog.records if r.name == "idp.services.dependencies"]
    assert [r.getMessage() for r in opened] == [
        "Redis is unavailable (TimeoutError): the circuit breaker is open, requests that need it "
        f"are refused without asking it for {BREAKER_OPEN_SECONDS:g} s"
    ]

    # Everything that needs Redis is refused at once: no connection, no byte reaches it.
    assert refused(password_step(browser, user))
    assert refused(passkey_options(browser))
    assert refused(signup(browser))
    health = browser.get("/healthz/dependencies",
                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # fmt: skip
    assert health.get_json()["dependencies"]["redis"]["state"] == "unavailable"
    assert health.get_json()["dependencies"]["redis"]["reason"] == "TimeoutError"
    # What needs no Redis is answered meanwhile.
    renewed = rp.refresh(tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert rp.userinfo(renewed.get_json()["access_token"]).status_code == 200
    assert browser.get("/.well-known/openid-configuration").status_code == 200
    assert proxy.held() == (connections, sent)
    scrape = browser.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert 'idp_dependency_breaker_opened_total{dependency="redis"}' in scrape.text

    # Its time passed: one request probes, and Redis still not answering opens it again.
    clock.advance(BREAKER_OPEN_SECONDS)
    assert refused(password_step(browser, user))
    probed = proxy.held()
    assert probed[0] == connections + 1
    assert refused(passkey_options(browser))
    assert proxy.held() == probed

    # Redis answers again: the next probe closes the breaker, and sign-in works.
    proxy.restore()
    assert refused(passkey_options(browser))  # still within the breaker's time
    clock.advance(BREAKER_OPEN_SECONDS)
    with caplog.at_level(logging.INFO, logger="idp.services.dependencies"):
        assert password_step(browser, user).status_code == 302
    assert container(app).redis_breaker.closed
    assert "Redis answers again: the circuit breaker is closed" in caplog.messages
    assert passkey_options(app.test_client()).status_code == 200


def redis_refusals() -> float:
    """This process's ``idp_dependency_refusals_total`` for Redis, every endpoint's."""
    return counted("idp_dependency_refusals_total", dependency="redis")


def test_a_refusal_storm_writes_one_audit_row_per_worker_and_breaker_window(
    proxied: tuple[Flask, TcpProxy, SteppedClock], caplog: pytest.LogCaptureFixture
) -> None:
    """docs/security.md, "Faults and degraded dependencies": while Redis is down the database is
    the one dependency up; refused sign-ins are audited once per worker and breaker window, the
    row counting the refusals since the previous one, and the metric counts every one."""
    app, proxy, monotonic = proxied
    user = create_user(app)
    browser = app.test_client()
    before = redis_refusals()
    wall = FrozenClock(utcnow())

    def both_clocks_advance() -> None:
        monotonic.advance(BREAKER_OPEN_SECONDS)
        wall.advance(timedelta(seconds=BREAKER_OPEN_SECONDS))

    def audited() -> list[AuditEvent]:
        found = rows(app, AuditEvent, AuditEvent.kind == "dependency.unavailable")
        return sorted(found, key=lambda event: event.at)

    storm = (lambda b: password_step(b, user), passkey_options, signup)
    with app_clock(app, wall):
        proxy.freeze()
        assert refused(password_step(browser, user))  # opens the breaker: audited at once
        first_at = wall.now()
        [first] = audited()
        assert first.details["refused"] == 1
        assert first.details["endpoint"] == "login.login"
        assert first.details["reason"] == "TimeoutError"
        wall.advance(timedelta(seconds=1))
        storm_began = wall.now()
        for index in range(30):  # within the breaker's window: counted, not audited
            assert refused(storm[index % 3](browser))
        assert len(audited()) == 1

        both_clocks_advance()  # the next window: its first refusal (the probe) audits the storm
        assert refused(passkey_options(browser))
        for _ in range(4):
            assert refused(password_step(browser, user))
        first_row, second = audited()
        assert first_row.id == first.id
        assert second.details["refused"] == 31
        assert second.details["since"] == storm_began.isoformat()
        assert second.details["by_endpoint"] == {
            "login.login": 10, "login.passkey_options": 11, "signup.start": 10,
        }  # fmt: skip

        # Redis answers again: what the last window refused is in the metric (and the log).
        proxy.restore()
        both_clocks_advance()
        with caplog.at_level(logging.INFO, logger="idp.services.dependencies"):
            assert password_step(browser, user).status_code == 302
        assert ("4 refusals while Redis was unavailable, since the last audited one, are "
                "counted in idp_dependency_refusals_total only") in caplog.messages  # fmt: skip

        # A later outage is dated by its own first refusal, nothing of the last one folded in.
        proxy.freeze()
        wall.advance(timedelta(minutes=10))
        assert refused(signup(browser))
        *_, third = audited()
        assert third.details["refused"] == 1
        assert third.details["since"] == wall.now().isoformat()
        assert first_at < storm_began < wall.now()

    assert len(audited()) == 3  # for 37 refusals in 3 windows of one worker
    assert redis_refusals() - before == 1 + 30 + 5 + 1
