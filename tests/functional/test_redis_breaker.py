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
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from idp.composition import container
from idp.redis_client import BREAKER_OPEN_SECONDS
from idp.unavailable import JSON_ERROR, TITLE
from tests.support.apps import app_on
from tests.support.factories import CreatedUser, create_client, create_user
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
