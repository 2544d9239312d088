"""Redis faults other than silence (docs/operations.md, "Redis"; docs/security.md, "Faults and
degraded dependencies"): a private redis-server (tests/support/redis_server.py) that answers but
refuses writes, as a replica after a failover does (``READONLY``) and as a Redis at its
``maxmemory`` under ``noeviction`` does (``OOM``), or refuses scripts, as a Redis whose ACL denies
idp's user scripting does (``NOPERM``). Every counted sign-in is refused meanwhile (fail closed),
and the probes must say so: a ``PING`` answers on all three, a plain ``SET`` on the last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from idp import create_app
from idp.composition import container
from idp.extensions import db
from idp.models import AuditEvent
from idp.redis_client import BREAKER_OPEN_SECONDS
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.services.rate_limits import FREE_FAILURES
from tests.conftest import app_overrides
from tests.functional.test_dpop import dpop_tokens, dpop_userinfo
from tests.functional.test_pushed_authorization import basic, push
from tests.functional.test_redis_breaker import SteppedClock
from tests.support.apps import app_on
from tests.support.counted import counted
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import CreatedUser, create_client, create_user, rows
from tests.support.flow import RelyingParty, csrf_token
from tests.support.redis_server import PrivateRedis, private_redis

METRICS_TOKEN = "redis-faults-scrape-" + "f" * 40


def password_step(browser: FlaskClient, user: CreatedUser, password: str) -> TestResponse:
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": user.email, "password": password}
    return browser.post("/login", data=form)


def health(browser: FlaskClient) -> tuple[int, dict[str, Any]]:
    answer = browser.get("/healthz/dependencies",
                         headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # fmt: skip
    body: dict[str, Any] = answer.get_json()
    return answer.status_code, body


@contextmanager
def readonly(redis_server: PrivateRedis, primary: PrivateRedis) -> Iterator[None]:
    """``redis_server`` made a replica of ``primary``: it answers, and refuses every write."""
    client = redis_server.client()
    try:
        client.replicaof("127.0.0.1", primary.port)
        yield
        client.replicaof("NO", "ONE")
    finally:
        client.close()


@contextmanager
def out_of_memory(redis_server: PrivateRedis, _primary: PrivateRedis) -> Iterator[None]:
    """``redis_server`` at its ``maxmemory`` (one byte) under ``noeviction``, Redis's default:
    it answers, and refuses every write that may take memory."""
    client = redis_server.client()
    try:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.config_set("maxmemory", "1")
        yield
        client.config_set("maxmemory", "0")
    finally:
        client.close()


@contextmanager
def no_scripting(redis_server: PrivateRedis, _primary: PrivateRedis) -> Iterator[None]:
    """``redis_server``'s default user, idp's, denied scripting by its ACL: it answers, and takes
    a plain ``SET``, but refuses ``EVAL``, which every attempt count is (``NOPERM``)."""
    client = redis_server.client()
    try:
        client.acl_setuser("default", enabled=True, commands=["-@scripting"])
        yield
        client.acl_setuser("default", enabled=True, commands=["+@all"])
    finally:
        client.close()


FAULTS: dict[str, tuple[Callable[[PrivateRedis, PrivateRedis], Any], str]] = {
    "readonly": (readonly, "ReadOnlyError"),
    "oom": (out_of_memory, "OutOfMemoryError"),
    "no_scripting": (no_scripting, "NoPermissionError"),
}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_redis_that_answers_but_refuses_writes_is_reported_not_writable(
    tmp_path: Path, database: str, fault: str
) -> None:
    """While Redis refuses writes, sign-in is refused (503) and the health document says Redis
    is ``not_writable`` with the error's class (a ``PING`` answered, so it said ``ok`` while every
    counted sign-in failed); with ``readiness_requires_redis`` the node is not ready. When Redis
    takes writes again both say ok and sign-in works, with nothing restarted."""
    make_fault, reason = FAULTS[fault]
    with (
        private_redis(tmp_path / "redis") as redis_server,
        private_redis(tmp_path / "primary") as primary,
        app_on(database, tmp_path, redis_url=redis_server.url,
               metrics_token=METRICS_TOKEN) as app,
    ):  # fmt: skip
        user = create_user(app)
        browser = app.test_client()
        requiring = _app_requiring_redis(app, tmp_path, redis_server.url)
        assert health(browser)[1]["dependencies"]["redis"]["state"] == "ok"

        with make_fault(redis_server, primary):
            assert password_step(browser, user, user.password).status_code == 503  # fail closed
            status, document = health(browser)
            assert status == 200  # ready: Redis is not required by default
            assert document["status"] == "degraded"
            assert document["dependencies"]["redis"]["state"] == "not_writable"
            assert document["dependencies"]["redis"]["reason"] == reason
            ready = requiring.test_client().get("/readyz")
            assert ready.status_code == 503
            checks = {"database": "ok", "redis": "not_writable"}
            assert ready.get_json() == {"status": "unavailable", "checks": checks}

        status, document = health(browser)
        assert (status, document["status"]) == (200, "ok")
        assert requiring.test_client().get("/readyz").status_code == 200
        assert password_step(browser, user, user.password).status_code == 302
        _dispose(requiring)


def _app_requiring_redis(app: Flask, instance: Path, redis_url: str) -> Flask:
    """A second node on ``app``'s database whose readiness requires Redis."""
    overrides = app_overrides(app.config["SQLALCHEMY_DATABASE_URI"], instance / "requiring",
                              redis_url=redis_url, readiness_requires_redis=True)  # fmt: skip
    return create_app(overrides)


def _dispose(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def counters_lost() -> float:
    """This process's ``idp_attempt_counters_lost_total`` for Redis."""
    return counted("idp_attempt_counters_lost_total", store="redis")


def test_counters_lost_by_a_redis_restart_are_reported_not_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis restarted without persistence forgets the failures counted (docs/operations.md,
    "Redis": each account may be tried up to the lockout threshold again, backoffs start over,
    locks stay in the database). The first count after it says so, once: a WARNING and
    ``idp_attempt_counters_lost_total``, as the first count on a Redis new to idp does; the
    counts between say nothing."""
    with (
        private_redis(tmp_path / "redis") as redis_server,
        app_on("sqlite", tmp_path, redis_url=redis_server.url) as app,
    ):
        user = create_user(app)
        browser = app.test_client()
        before = counters_lost()

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records
                    if r.name == "idp.services.dependencies" and r.levelno == logging.WARNING
                    and "holds no attempt counters" in r.getMessage()]  # fmt: skip

        with caplog.at_level(logging.WARNING, logger="idp.services.dependencies"):
            for _ in range(FREE_FAILURES):
                assert password_step(browser, user, "not the password").status_code == 401
            assert len(warnings()) == 1  # the first count on a Redis new to idp
            assert counters_lost() - before == 1
            client = redis_server.client()
            [counted] = client.keys("idp:fail:pwd:*")
            assert client.get(counted) == str(FREE_FAILURES).encode()
            client.close()

            redis_server.stop()
            redis_server.start()  # nothing kept: no persistence
            assert password_step(browser, user, "not the password").status_code == 401
            assert len(warnings()) == 2
            assert counters_lost() - before == 2
            client = redis_server.client()
            assert client.get(counted) == b"1"  # counted again from nothing: what is reported
            client.close()
            assert password_step(browser, user, user.password).status_code == 302
            assert len(warnings()) == 2


def refusals_at(endpoint: str) -> float:
    """This process's ``idp_dependency_refusals_total`` for Redis at ``endpoint``."""
    return counted("idp_dependency_refusals_total", endpoint=endpoint)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_with_redis_down_a_public_clients_dpop_requests_are_a_json_503_not_a_500(
    tmp_path: Path, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A public client's DPoP proof spends its address's budget, in Redis (RFC 9449 11.1): with
    Redis stopped its refresh and UserInfo requests, answered below Flask (idp.web.direct), are
    refused as every request that needs Redis is: OAuth's JSON ``temporarily_unavailable``, 503,
    ``Retry-After``, counted and audited, not a 500 ``server_error`` logged as a crash. The
    refused refresh spent nothing: once Redis answers the same token refreshes."""
    with (
        private_redis(tmp_path / "redis") as redis_server,
        app_on(database, tmp_path, redis_url=redis_server.url) as app,
    ):
        rp = RelyingParty(app.test_client(), create_client(app, public=True, name="SPA"))
        key = DPoPKey()
        tokens = dpop_tokens(rp, create_user(app), key)
        stepped = SteppedClock()
        container(app).redis_breaker.monotonic = stepped
        before = {endpoint: refusals_at(endpoint) for endpoint in ("oidc.token", "oidc.userinfo")}

        redis_server.stop()
        proof = key.proof("GET", USERINFO_URL, access_token=tokens["access_token"])
        with caplog.at_level(logging.INFO):
            answers = [rp.refresh(tokens["refresh_token"], dpop=key.proof()),
                       dpop_userinfo(app.test_client(), tokens["access_token"], proof)]  # fmt: skip
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.get_json()["error"] == "temporarily_unavailable"
            assert answer.headers["Retry-After"] == "5"
            assert answer.headers["Cache-Control"] == "no-store"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        counted = {endpoint: refusals_at(endpoint) - n for endpoint, n in before.items()}
        assert counted == {"oidc.token": 1, "oidc.userinfo": 1}
        [audited] = rows(app, AuditEvent, AuditEvent.kind == "dependency.unavailable")
        assert (audited.details["endpoint"], audited.details["refused"]) == ("oidc.token", 1)

        redis_server.start()
        stepped.advance(BREAKER_OPEN_SECONDS)  # the breaker lets the next request probe
        renewed = rp.refresh(tokens["refresh_token"], dpop=key.proof())
        assert renewed.status_code == 200, renewed.text


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_with_redis_down_the_push_and_device_authorization_endpoints_answer_oauth_json(
    tmp_path: Path, database: str
) -> None:
    """The pushed authorization endpoint and the device authorization endpoint answer only
    OAuth's JSON (RFC 9126 2.3, RFC 8628 3.2, both in RFC 6749 5.2's form): with Redis stopped
    (a client's push budget, the device flow's limits) their refusal is that JSON,
    ``temporarily_unavailable`` with 503 and ``Retry-After``, not the sign-in pages' HTML page,
    which a client library cannot read, whatever the request's Accept header says; the push's
    readable by any origin, as its other answers are."""
    with (
        private_redis(tmp_path / "redis") as redis_server,
        app_on(database, tmp_path, redis_url=redis_server.url) as app,
    ):
        rp = RelyingParty(app.test_client(), create_client(app, name="Pusher"))
        device = create_client(app, name="TV", redirect_uris=[],
                               grant_types=[DEVICE_CODE_GRANT_TYPE, "refresh_token"])  # fmt: skip
        redis_server.stop()
        answers = [
            push(rp, headers={**basic(rp.registered), "Accept": "text/html"}),
            app.test_client().post(
                "/device_authorization",
                data={"client_id": device.client_id, "scope": "openid"},
                headers={**basic(device), "Accept": "text/html"},
            ),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.mimetype == "application/json", answer.text
            assert answer.get_json()["error"] == "temporarily_unavailable"
            assert answer.headers["Retry-After"] == "5"
        # A single-page app pushes from its page: it can read the refusal and when to retry.
        assert answers[0].headers["Access-Control-Allow-Origin"] == "*"
        assert answers[0].headers["Access-Control-Expose-Headers"] == "Retry-After"
