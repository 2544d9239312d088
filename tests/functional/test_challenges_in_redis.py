"""WebAuthn challenges in Redis (``IDP_REDIS_URL`` set): idp.services.challenges.RedisChallenges.

The same rules as the database store (tests/functional/test_passkeys.py), through the real
endpoints with the Flask test client and the machine's Redis: the challenge is a Redis key with
the ceremony's lifetime and never a ``webauthn_challenges`` row; it is spent once (GETDEL), only
while live, only by the browser and for the ceremony it was issued to, and for registration only
by the user it was issued for. Then 12 parallel answers to one challenge against a live 2-worker
server: exactly one signs in. Runs on SQLite and PostgreSQL; the Redis database used here (13) is
emptied before and after every test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import create_engine, func, select

from idp import create_app
from idp.clock import KEPT_PAST_EXPIRY
from idp.extensions import db
from idp.models import Base, WebAuthnChallenge
from idp.models.base import utcnow
from idp.services.challenges import REDIS_KEY_PREFIX
from tests.conftest import _empty_tables, app_overrides, throwaway_postgres_database
from tests.functional.test_passkeys import (
    AUTHENTICATION,
    REGISTRATION,
    Ceremony,
    last_failure_reason,
    make_ceremony,
    passkeys_of,
    synced,
)
from tests.support.apps import live_on
from tests.support.factories import CreatedUser, create_user
from tests.support.http_flows import ParallelPasskeyAnswer
from tests.support.live import LiveIdp
from tests.support.passkey_flow import PasskeyPages

#: A Redis database no other test uses (0: ops and fallback tests, 7: the multi-node cluster).
REDIS_URL = "redis://127.0.0.1:6379/13"
PARALLEL = 12
PASSWORD = "challenges kept in redis"

pytestmark = pytest.mark.postgres


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_client() -> Iterator[Any]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=10)
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(autouse=True)
def empty_redis(redis_client: Any) -> Iterator[None]:
    """Every test starts and ends with this Redis database empty (challenges, counters)."""
    redis_client.flushdb()
    yield
    redis_client.flushdb()


def _build_app(database_url: str, instance: Path) -> Flask:
    flask_app = create_app(app_overrides(database_url, instance, redis_url=REDIS_URL))
    with flask_app.app_context():
        Base.metadata.create_all(db.engine)
        flask_app.extensions["idp"].keys.ensure_keys(db.session())
        db.session.commit()
    return flask_app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def _redis_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    instance = tmp_path_factory.mktemp(f"redis-{request.param}")
    if request.param == "sqlite":
        yield _build_app(f"sqlite:///{instance / 'idp.db'}", instance)
    else:
        with throwaway_postgres_database() as url:
            flask_app = _build_app(url, instance)
            yield flask_app
            with flask_app.app_context():
                db.session.remove()
                db.engine.dispose()


@pytest.fixture
def app(_redis_app: Flask) -> Iterator[Flask]:
    """The app with ``redis_url`` set, on each database, emptied after the test."""
    yield _redis_app
    _empty_tables(_redis_app)


@pytest.fixture
def user(app: Flask) -> CreatedUser:
    return create_user(app)


@pytest.fixture(params=[REGISTRATION, AUTHENTICATION])
def ceremony(request: pytest.FixtureRequest, app: Flask, user: CreatedUser) -> Ceremony:
    return make_ceremony(app, request.param, user)


def challenge_rows(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(WebAuthnChallenge))
        db.session.remove()
        return int(count or 0)


def key_of(issued: dict[str, Any]) -> str:
    return REDIS_KEY_PREFIX + issued["challenge_id"]


# -- where the challenge is -----------------------------------------------------------------------
def test_challenge_is_a_redis_key_with_the_ceremony_lifetime_and_never_a_row(
    app: Flask, ceremony: Ceremony, redis_client: Any
) -> None:
    issued = ceremony.options()
    stored = json.loads(redis_client.get(key_of(issued)))
    assert stored["kind"] == ceremony.kind
    assert stored["challenge"] == issued["publicKey"]["challenge"]
    # WebAuthn L3 5.4.3: the key lives as long as the ceremony's timeout, five minutes at most.
    assert 0 < redis_client.ttl(key_of(issued)) <= 300
    assert issued["publicKey"]["timeout"] <= 300_000
    assert challenge_rows(app) == 0

    ceremony.assert_accepted(ceremony.answer(issued))
    assert not redis_client.exists(key_of(issued))
    assert challenge_rows(app) == 0


def test_challenge_key_holds_no_browser_binding_in_the_clear(
    ceremony: Ceremony, redis_client: Any
) -> None:
    """The browser's binding cookie value is a bearer secret: Redis holds only its SHA-256."""
    issued = ceremony.options()
    with ceremony.pages.browser.session_transaction() as cookie_session:
        binding = cookie_session["webauthn_binding"]
    raw = redis_client.get(key_of(issued))
    assert binding not in raw
    assert len(json.loads(raw)["binding_hash"]) == 64


# -- spent once -----------------------------------------------------------------------------------
def test_replayed_answer_to_a_redis_challenge_is_refused(
    app: Flask, ceremony: Ceremony, redis_client: Any
) -> None:
    """The very same credential posted twice: the second finds the challenge spent (GETDEL)."""
    issued = ceremony.options()
    if ceremony.kind == REGISTRATION:
        answer = ceremony.authenticator.create(issued["publicKey"])
        ceremony.assert_accepted(ceremony.pages.register(issued["challenge_id"], answer))
        # Step-up: with a passkey now registered, only a passkey session may register again.
        assert ceremony.pages.sign_in_with_passkey(ceremony.authenticator).status_code == 200
        replay = ceremony.pages.register(issued["challenge_id"], answer)
        assert replay.status_code == 400, replay.text
        assert last_failure_reason(app, ceremony.audit_kind) == "challenge_invalid"
    else:
        answer = ceremony.authenticator.get(issued["publicKey"])
        ceremony.assert_accepted(ceremony.pages.verify(issued["challenge_id"], answer))
        replay = ceremony.pages.verify(issued["challenge_id"], answer)
        ceremony.assert_refused(replay, "challenge_invalid")
    assert challenge_rows(app) == 0


# -- only while live ------------------------------------------------------------------------------
def test_redis_challenge_whose_key_expired_is_refused(
    ceremony: Ceremony, redis_client: Any
) -> None:
    issued = ceremony.options()
    redis_client.pexpire(key_of(issued), 1)
    deadline = time.monotonic() + 5
    while redis_client.exists(key_of(issued)) and time.monotonic() < deadline:
        time.sleep(0.01)
    ceremony.assert_refused(ceremony.answer(issued), "challenge_invalid")


def test_redis_challenge_past_its_lifetime_is_refused_while_the_key_lives(
    ceremony: Ceremony, redis_client: Any
) -> None:
    """The stored ``expires_at`` is checked against the service's clock, not left to EX alone."""
    issued = ceremony.options()
    stored = json.loads(redis_client.get(key_of(issued)))
    stored["expires_at"] = (utcnow() - timedelta(seconds=1)).isoformat()
    redis_client.set(key_of(issued), json.dumps(stored), keepttl=True)
    ceremony.assert_refused(ceremony.answer(issued), "challenge_invalid")


# -- only this browser's, this ceremony's, this user's --------------------------------------------
def test_redis_challenge_issued_to_another_browser_is_refused(
    app: Flask, ceremony: Ceremony, user: CreatedUser, redis_client: Any
) -> None:
    """The same user signed in on a second browser cannot answer the first browser's challenge;
    the attempt spends it (GETDEL first, fail closed): the first browser starts over."""
    other_browser = PasskeyPages(app.test_client())
    other_browser.sign_in_with_password(user)
    issued = ceremony.options()
    ceremony.assert_refused(ceremony.answer(issued, pages=other_browser), "challenge_invalid")
    assert not redis_client.exists(key_of(issued))
    ceremony.assert_refused(ceremony.answer(issued), "challenge_invalid")


def test_redis_challenge_of_the_other_ceremony_is_refused(ceremony: Ceremony) -> None:
    own = ceremony.options()
    other = ceremony.options_of_the_other_kind()
    swapped = {
        "challenge_id": other["challenge_id"],
        "publicKey": {**own["publicKey"], "challenge": other["publicKey"]["challenge"]},
    }
    ceremony.assert_refused(ceremony.answer(swapped), "challenge_invalid")


def test_redis_registration_challenge_is_bound_to_the_user(app: Flask, user: CreatedUser) -> None:
    """Someone else signing in on the same browser cannot finish the first user's registration."""
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    issued = pages.registration_options().get_json()
    pages.sign_in_with_password(create_user(app, email="grace@example.com"))
    response = pages.register(issued["challenge_id"], synced().create(issued["publicKey"]))
    assert response.status_code == 400, response.text
    assert last_failure_reason(app, "passkey.registered") == "challenge_user_mismatch"
    assert passkeys_of(app, user.id) == []


# -- parallel answers against a live multi-process server ----------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_redis(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """``idp serve --production`` (2 workers) with ``IDP_REDIS_URL``."""
    directory = tmp_path_factory.mktemp(f"live-redis-{request.param}")
    with live_on(
        request.param, directory, production=True, env={"IDP_REDIS_URL": REDIS_URL}
    ) as idp:
        yield idp


def test_parallel_answers_to_one_redis_challenge_exactly_one_signs_in(
    live_redis: LiveIdp, redis_client: Any
) -> None:
    live, database_url = live_redis, live_redis.env["IDP_DATABASE_URL"]
    email = "parallel-redis@example.com"
    live.create_user(email, PASSWORD)
    answer = ParallelPasskeyAnswer.prepare(live.url, email, PASSWORD)
    issued = answer.issued
    assert redis_client.exists(key_of(issued))
    responses = answer.send(PARALLEL)

    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert {r.status_code for r in losers} == {400}
    assert {r.json()["error"] for r in losers} == {"passkey_failed"}
    assert not redis_client.exists(key_of(issued))
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.scalar(select(func.count()).select_from(WebAuthnChallenge))
    finally:
        engine.dispose()
    assert rows == 0


# -- the sign-in page's signed challenge (idp.services.challenges.SignedChallenges) ---------------
def test_a_page_challenge_is_spent_once_in_redis_and_never_a_row(
    app: Flask, user: CreatedUser, redis_client: Any
) -> None:
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = synced()
    assert pages.add_passkey(authenticator).status_code == 201
    visitor = PasskeyPages(app.test_client())
    issued, csrf = visitor.page_ceremony()
    assert redis_client.keys(REDIS_KEY_PREFIX + "spent:*") == []  # showing the page stores nothing
    body = {"challenge_id": issued["challenge_id"], "request": "", "next": "",
            "credential": authenticator.get(issued["publicKey"])}  # fmt: skip
    headers = {"X-CSRFToken": csrf}
    assert (
        visitor.browser.post("/login/passkey/verify", json=body, headers=headers).status_code == 200
    )
    (spent,) = redis_client.keys(REDIS_KEY_PREFIX + "spent:*")
    assert 300 < redis_client.ttl(spent) <= 300 + KEPT_PAST_EXPIRY.total_seconds()
    replayed = visitor.browser.post("/login/passkey/verify", json=body, headers=headers)
    assert replayed.status_code == 400
    assert last_failure_reason(app, "login.passkey") == "challenge_invalid"
    assert challenge_rows(app) == 0


def test_parallel_answers_to_one_page_challenge_in_redis_exactly_one_signs_in(
    live_redis: LiveIdp,
) -> None:
    email = "parallel-page-redis@example.com"
    live_redis.create_user(email, PASSWORD)
    answer = ParallelPasskeyAnswer.prepare(live_redis.url, email, PASSWORD, from_page=True)
    responses = answer.send(PARALLEL)
    assert [r.status_code for r in responses].count(200) == 1, [r.status_code for r in responses]
    assert {r.status_code for r in responses if r.status_code != 200} == {400}
