"""The fallback path under real parallel requests: a live multi-process server (SQLite and
PostgreSQL) and the machine's Redis.

docs/architecture.md, "Invariants": every secret spent once (a backup code here) is spent through
one atomic consume-once primitive, so of N parallel uses exactly one wins; failed attempts are
counted per account and factor, shared across nodes, so N parallel guesses all count.
"""

from __future__ import annotations

import html
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyotp
import pytest
import redis
import requests
from flask import Flask
from sqlalchemy import delete, func, select

from idp import create_app
from idp.extensions import db
from idp.models import AttemptCounter, BackupCode, Base, User
from idp.models.base import utcnow
from idp.services import sign_in as messages
from idp.services.rate_limits import (
    COUNTER_LIFETIME,
    LOCK_AFTER,
    AttemptLimiter,
    DatabaseCounters,
    FactorLocks,
)
from idp.services.redis_counters import RedisCounters
from idp.web import email_key
from tests.conftest import app_overrides
from tests.support.apps import app_of
from tests.support.browserless import Browser, Form, parse_forms
from tests.support.factories import create_user
from tests.support.flow import csrf_token, shown_address
from tests.support.live import FromAddress, LiveIdp

PASSWORD = "parallel fallback passphrase"
PARALLEL_SPENDS = 12
PARALLEL_GUESSES = 50
REDIS_URL = "redis://127.0.0.1:6379/0"
TIMEOUT = 60
BACKUP_CODE = re.compile(r"<li><code>([a-z0-9-]+)</code></li>")
TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
T = TypeVar("T")


# -- the live server and its database -------------------------------------------------------------


def forget_address_failures(flask_app: Flask) -> None:
    """Other tests on this server failed from 127.0.0.1 too: forget those failures (as the
    per-address window's end would) so that they delay nothing here."""
    with flask_app.app_context():
        db.session.execute(delete(AttemptCounter).where(AttemptCounter.key.like("win:addr:%")))
        db.session.commit()


def all_at_once(count: int, action: Callable[[int], T]) -> list[T]:
    """Run ``action(i)`` for i in range(count) on as many threads, released together."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=TIMEOUT)
        return action(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


# -- a user agent over HTTP -----------------------------------------------------------------------
def get(browser: Browser, url: str) -> requests.Response:
    return browser.session.get(url, allow_redirects=False, timeout=TIMEOUT)


def form_with(html_text: str, field: str, value: str | None = None) -> Form:
    for form in parse_forms(html_text):
        if field in form.field_names() and (value is None or form.fields().get(field) == value):
            return form
    raise AssertionError(f"no form with {field}={value!r}")


def password_step(live: LiveIdp, email: str, password: str) -> tuple[Browser, requests.Response]:
    browser = Browser()
    url = live.url + "/login"
    page = get(browser, url)
    _, response = browser.submit(url, form_with(page.text, "password"), email=email,
                                 password=password)  # fmt: skip
    return browser, response


def enrol_totp(live: LiveIdp, email: str) -> list[str]:
    """Sign in with the password and set up an authenticator app: the backup codes it hands out.
    The server's real clock decides here; a code for now is in its window (current or previous
    step) whichever side of a step boundary the request lands."""
    browser, response = password_step(live, email, PASSWORD)
    with browser:
        assert response.status_code == 302, response.text
        url = live.url + "/account/totp"
        page = get(browser, url)
        assert page.status_code == 200, page.text
        match = TOTP_SECRET.search(page.text)
        assert match, "no TOTP secret on the enrolment page"
        _, confirmed = browser.submit(url, form_with(page.text, "code"),
                                      code=pyotp.TOTP(match.group(1)).now())  # fmt: skip
        assert confirmed.status_code == 200, confirmed.text
        codes = BACKUP_CODE.findall(confirmed.text)
    assert len(codes) == 10
    return codes


# == backup codes =================================================================================
def test_parallel_spends_of_one_backup_code_exactly_one_wins(live: LiveIdp, tmp_path: Path) -> None:
    with app_of(live, tmp_path) as flask_app:
        forget_address_failures(flask_app)
    email = f"spend-{secrets.token_hex(4)}@example.com"
    user = live.create_user(email, PASSWORD)
    code = enrol_totp(live, email)[0]

    # Every browser passed the password step: each holds its own partial sign-in.
    prepared: list[tuple[Browser, str, dict[str, str]]] = []
    for _ in range(PARALLEL_SPENDS):
        browser, response = password_step(live, email, PASSWORD)
        assert shown_address(response) == "/login/second-step", response.text
        url = live.url + "/login/second-step"
        form = form_with(response.text, "method", "backup_code")
        prepared.append((browser, url, form.fields(code=code)))

    def spend(index: int) -> requests.Response:
        browser, url, data = prepared[index]
        return browser.session.post(url, data=data, headers={"Origin": live.url},
                                    allow_redirects=False, timeout=TIMEOUT)  # fmt: skip

    try:
        responses = all_at_once(PARALLEL_SPENDS, spend)
        winners = [i for i, r in enumerate(responses) if r.status_code == 302]
        assert len(winners) == 1, [r.status_code for r in responses]
        assert responses[winners[0]].headers["Location"] == "/account"
        for index, response in enumerate(responses):
            if index != winners[0]:
                assert response.status_code == 401
                refusal = html.unescape(response.text)
                assert messages.CODE_FAILURE in refusal or messages.THROTTLED in refusal

        home = get(prepared[winners[0]][0], live.url + "/account")
        assert home.status_code == 200
        assert "9 of 10 backup codes left." in html.unescape(home.text)
    finally:
        for browser, _, _ in prepared:
            browser.close()

    with app_of(live, tmp_path) as flask_app, flask_app.app_context():
        spent = db.session.scalar(
            select(func.count()).select_from(BackupCode).where(
                BackupCode.user_id == user["sub"], BackupCode.consumed_at.is_not(None))
        )  # fmt: skip
        assert spent == 1


# == attempt counters =============================================================================
def test_fifty_parallel_wrong_passwords_all_count(live: LiveIdp, tmp_path: Path) -> None:
    """A distributed guess: fifty addresses at once, so that no per-address row serialises the
    requests and only the account counter's atomic upsert keeps the count."""
    email = f"guess-{secrets.token_hex(4)}@example.com"
    live.create_user(email, PASSWORD)
    addresses = [f"127.0.{secrets.randbelow(200) + 1}.{i + 10}" for i in range(PARALLEL_GUESSES)]
    prepared: list[tuple[Browser, str, dict[str, str]]] = []
    for address in addresses:
        browser = Browser()
        browser.session.mount("http://", FromAddress(address))
        url = live.url + "/login"
        form = form_with(get(browser, url).text, "password")
        prepared.append((browser, url, form.fields(email=email, password="not the password")))

    def guess(index: int) -> requests.Response:
        browser, url, data = prepared[index]
        return browser.session.post(url, data=data, headers={"Origin": live.url},
                                    allow_redirects=False, timeout=TIMEOUT)  # fmt: skip

    try:
        responses = all_at_once(PARALLEL_GUESSES, guess)
    finally:
        for browser, _, _ in prepared:
            browser.close()
    assert {r.status_code for r in responses} == {401}
    for response in responses:
        refusal = html.unescape(response.text)
        assert messages.GENERIC_FAILURE in refusal or messages.THROTTLED in refusal

    with app_of(live, tmp_path) as flask_app, flask_app.test_request_context():
        counters = DatabaseCounters(db.session())
        assert counters.get(f"pwd:{email_key(email)}")[0] == PARALLEL_GUESSES
        rows = db.session.scalars(
            select(AttemptCounter).where(AttemptCounter.key.like("win:addr:%"))
        ).all()
        per_address = {row.key.rsplit(":", 1)[1]: row.failures for row in rows}
        assert {per_address[address] for address in addresses} == {1}


# == Redis ========================================================================================
@pytest.fixture
def redis_client() -> Iterator[Any]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10, socket_connect_timeout=5)
    client.ping()
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: Any) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"test-{secrets.token_hex(8)}"
    yield prefix
    for name in list(redis_client.scan_iter(match=f"idp:fail*{prefix}*", count=1000)):
        redis_client.delete(name)


def test_redis_counters_count_fifty_parallel_failures(redis_client: Any, redis_prefix: str) -> None:
    counters = RedisCounters(redis_client)
    key = f"{redis_prefix}:pwd:subject"
    now = utcnow()
    counts = all_at_once(
        PARALLEL_GUESSES, lambda _: counters.count([(key, COUNTER_LIFETIME)], now)[0][0]
    )
    # The count script is atomic: each failure saw its own count.
    assert sorted(counts) == list(range(1, PARALLEL_GUESSES + 1))
    failures, last = counters.get(key)
    assert failures == PARALLEL_GUESSES
    assert last is not None
    assert abs((last - now).total_seconds()) < 1
    counters.reset(key)
    assert counters.get(key) == (0, None)


def test_redis_limiter_locks_after_a_hundred_failures_and_unlocks(
    redis_client: Any, redis_prefix: str, app: Flask
) -> None:
    key = AttemptLimiter.account_key("pwd", redis_prefix)
    address = f"{redis_prefix}-address"
    long_ago = utcnow() - timedelta(days=1)
    with app.app_context():
        limiter = AttemptLimiter(RedisCounters(redis_client), FactorLocks(db.session()))
        for _ in range(LOCK_AFTER - 1):
            RedisCounters(redis_client).count([(key, COUNTER_LIFETIME)], long_ago)
        hundredth = limiter.reserve(key, address, utcnow())
        assert hundredth.verdict.allowed is True
        limiter.failed(hundredth, utcnow())
        db.session.commit()
        verdict = limiter.reserve(key, address, utcnow() + timedelta(days=29)).verdict
        assert (verdict.allowed, verdict.locked) == (False, True)
        limiter.unlock(key)
        db.session.commit()
        assert limiter.reserve(key, address, utcnow()).verdict.allowed is True


def test_nodes_sharing_redis_share_the_counters(
    tmp_path: Path, redis_client: Any, redis_prefix: str
) -> None:
    """Two nodes on one database and one Redis: failures counted by one lock the other, and none
    land in the database (counters shared across nodes, in Redis when configured)."""
    database = f"sqlite:///{tmp_path / 'idp.db'}"
    nodes = [
        create_app(app_overrides(database, tmp_path / f"node{i}", redis_url=REDIS_URL))
        for i in (1, 2)
    ]
    with nodes[0].app_context():
        Base.metadata.create_all(db.engine)
    email = f"{redis_prefix}@example.com"
    create_user(nodes[0], email=email, password=PASSWORD)
    address = f"2001:db8::{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"
    with nodes[0].test_request_context():
        key = f"pwd:{email_key(email)}"
    try:

        def attempt(node: Flask, password: str) -> str:
            browser = node.test_client()
            page = browser.get("/login")
            response = browser.post(
                "/login",
                data={"csrf_token": csrf_token(page.text), "email": email, "password": password},
                environ_base={"REMOTE_ADDR": address},
            )
            return html.unescape(response.text)

        assert messages.GENERIC_FAILURE in attempt(nodes[0], "not the password")
        assert RedisCounters(redis_client).get(key)[0] == 1
        for _ in range(LOCK_AFTER - 1):
            RedisCounters(redis_client).count(
                [(key, COUNTER_LIFETIME)], utcnow() - timedelta(days=1)
            )
        assert messages.LOCKED in attempt(nodes[1], PASSWORD)
        with nodes[1].app_context():
            assert db.session.scalar(select(func.count()).select_from(AttemptCounter)) == 0
            assert db.session.scalar(select(func.count()).select_from(User)) == 1
    finally:
        redis_client.delete(
            f"idp:fail:{key}", f"idp:fail-at:{key}",
            *redis_client.scan_iter(match=f"idp:fail*:win:addr:*:{address}"),
        )  # fmt: skip
        for node in nodes:
            with node.app_context():
                db.session.remove()
                db.engine.dispose()
