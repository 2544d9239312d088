"""Attempt counters, locks and sign-up limits under real parallel requests against a live
``idp serve --production`` (two worker processes): on SQLite, on PostgreSQL, and with the counters
in a private Redis (docs/security.md, "Attempt counters, lockouts and sign-up limits").

Requests are held in flight at a checkpoint the test controls (idp.checkpoints), never by a sleep
or a slow hash: what a test counts is what reached the checkpoint while the others finished.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from idp.extensions import db
from idp.models import AttemptCounter, AuditEvent, FactorLock, OutboxMessage
from idp.models.base import utcnow
from idp.services import sign_in as messages
from idp.services.rate_limits import (
    COUNTER_LIFETIME,
    FREE_FAILURES,
    LOCK_AFTER,
    CounterStore,
    DatabaseCounters,
)
from idp.services.redis_counters import RedisCounters
from idp.services.sign_in import CHECKPOINT
from idp.services.signup import MAIL_CHECKPOINT, MAX_MESSAGES_PER_ADDRESS
from idp.unavailable import JSON_ERROR, TITLE
from idp.web import email_key
from tests.support.apps import app_of, live_on
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.http_flows import Visitor
from tests.support.live import FromAddress, LiveIdp
from tests.support.redis_server import PrivateRedis, private_redis

PASSWORD = "counted before checked 7"
PARALLEL = 16
PARALLEL_SIGNUPS = 12
METRICS_TOKEN = "counters-metrics-token-" + "m" * 20


@dataclass
class CountersIdp:
    live: LiveIdp
    checkpoints: Checkpoints
    redis: PrivateRedis | None = None


def _serve(database: str, directory: Path, *, with_redis: bool) -> Iterator[CountersIdp]:
    checkpoints = Checkpoints(directory / "checkpoints")
    checkpoints.open_all(CHECKPOINT, MAIL_CHECKPOINT)
    env = checkpoints.env | {"IDP_SIGNUP_ENABLED": "true", "IDP_METRICS_TOKEN": METRICS_TOKEN}
    with ExitStack() as stack:
        redis_server = None
        if with_redis:
            redis_server = stack.enter_context(private_redis(directory / "redis"))
            env["IDP_REDIS_URL"] = redis_server.url
        live = stack.enter_context(live_on(database, directory, production=True, env=env))
        yield CountersIdp(live, checkpoints, redis_server)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CountersIdp]:
    """Counters in the database (SQLite, then PostgreSQL)."""
    yield from _serve(request.param, tmp_path_factory.mktemp(f"counters-{request.param}"),
                      with_redis=False)  # fmt: skip


@pytest.fixture(scope="module")
def redis_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountersIdp]:
    """Counters in a private Redis (the database SQLite)."""
    yield from _serve("sqlite", tmp_path_factory.mktemp("counters-redis"), with_redis=True)


# -- helpers --------------------------------------------------------------------------------------
def new_email(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(4)}@example.com"


def visitor(live: LiveIdp, address: str | None = None) -> Visitor:
    browser = Visitor(live.url, headers={"Origin": live.url})
    if address is not None:
        browser.http.mount("http://", FromAddress(address))
    return browser


def addresses(count: int) -> list[str]:
    """Loopback addresses of their own: no per-address counter is shared with another test."""
    base = f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
    return [f"{base}.{i + 10}" for i in range(count)]


def text_of(response: requests.Response) -> str:
    return html.unescape(response.text)


def store_of(idp: CountersIdp) -> CounterStore:
    """The server's counter store, from the test (inside an app context)."""
    if idp.redis is not None:
        return RedisCounters(idp.redis.client())
    return DatabaseCounters(db.session())


def in_parallel_holding(
    idp: CountersIdp,
    checkpoint: str,
    count: int,
    most: int,
    send: Callable[[int], requests.Response],
) -> list[requests.Response]:
    """Send ``count`` requests at once while ``checkpoint`` holds whatever reaches it; once every
    request either reached it or was answered, check that at most ``most`` reached it (more is a
    failure at once: the server's few threads could not answer the rest while they are held),
    then release them all."""
    with ThreadPoolExecutor(count) as pool, idp.checkpoints.holding(checkpoint):
        futures = [pool.submit(send, index) for index in range(count)]
        wait_until(
            lambda: (
                idp.checkpoints.arrivals(checkpoint) + sum(f.done() for f in futures) == count
                or idp.checkpoints.arrivals(checkpoint) > most
            ),
            f"each of {count} requests held at {checkpoint} or answered",
        )
        reached = idp.checkpoints.arrivals(checkpoint)
        assert reached <= most, f"{reached} requests reached {checkpoint}, at most {most} may"
    assert reached == most, f"{reached} requests reached {checkpoint}, expected {most}"
    return [future.result() for future in futures]


# == an attempt is counted before it is checked ===================================================
def _parallel_guesses_after_a_backoff(idp: CountersIdp, tmp_path: Path) -> None:
    live = idp.live
    email = new_email("guess")
    live.create_user(email, PASSWORD)
    # Enough earlier failures that the delay each later attempt finds (512 s and more) dwarfs any
    # stall of a loaded machine between two parallel requests' counts.
    earlier = FREE_FAILURES + 9
    with app_of(live, tmp_path) as flask_app, flask_app.test_request_context():
        key = f"pwd:{email_key(email)}"
        # Failures long ago: the backoff they earned has passed, the next attempt is checked.
        for _ in range(earlier):
            store_of(idp).count([(key, COUNTER_LIFETIME)], utcnow() - timedelta(days=1))
    browsers = [visitor(live, address) for address in addresses(PARALLEL)]
    forms = [browser.csrf_field("/login") for browser in browsers]

    def guess(index: int) -> requests.Response:
        data = {"csrf_token": forms[index], "email": email, "password": "not the password"}
        return browsers[index].post("/login", data=data)

    # Each attempt is counted before its check: the first finds the backoff over, every later
    # one finds the attempts before it counted, and is refused without a password check.
    try:
        responses = in_parallel_holding(idp, CHECKPOINT, PARALLEL, 1, guess)
    finally:
        for browser in browsers:
            browser.close()
    assert [r.status_code for r in responses] == [401] * PARALLEL
    answers = sorted(
        "checked" if messages.GENERIC_FAILURE in text_of(r)
        else "throttled" if messages.THROTTLED in text_of(r) else r.text
        for r in responses
    )  # fmt: skip
    assert answers == ["checked"] + ["throttled"] * (PARALLEL - 1)
    with app_of(live, tmp_path) as flask_app, flask_app.test_request_context():
        assert store_of(idp).get(key)[0] == earlier + PARALLEL


def test_parallel_guesses_after_a_backoff_get_one_password_check(
    db_live: CountersIdp, tmp_path: Path
) -> None:
    _parallel_guesses_after_a_backoff(db_live, tmp_path)


def test_parallel_guesses_after_a_backoff_get_one_password_check_with_redis_counters(
    redis_live: CountersIdp, tmp_path: Path
) -> None:
    _parallel_guesses_after_a_backoff(redis_live, tmp_path)


# == sign-up mail caps ============================================================================
@pytest.mark.parametrize("account", ["new", "existing"])
def test_parallel_sign_ups_for_one_address_send_at_most_the_cap(
    db_live: CountersIdp, tmp_path: Path, account: str
) -> None:
    """Twelve parallel sign-ups for one address mail it at most the hour's cap (a link
    for a new address, a "someone tried to sign up" notice to an existing account)."""
    live = db_live.live
    email = new_email(f"signup-{account}")
    if account == "existing":
        live.create_user(email, PASSWORD)
    kind = "signup_link" if account == "new" else "signup_existing"
    browsers = [visitor(live, address) for address in addresses(PARALLEL_SIGNUPS)]
    forms = [browser.csrf_field("/signup") for browser in browsers]

    def sign_up(index: int) -> requests.Response:
        return browsers[index].post("/signup", data={"csrf_token": forms[index], "email": email})

    # While the ones counted are held before writing their mail, the rest find the cap used.
    try:
        responses = in_parallel_holding(db_live, MAIL_CHECKPOINT, PARALLEL_SIGNUPS,
                                        MAX_MESSAGES_PER_ADDRESS, sign_up)  # fmt: skip
    finally:
        for browser in browsers:
            browser.close()
    assert [r.status_code for r in responses] == [200] * PARALLEL_SIGNUPS  # one answer for all
    with app_of(live, tmp_path) as flask_app, flask_app.app_context():
        sent = db.session.scalar(
            select(func.count()).select_from(OutboxMessage)
            .where(OutboxMessage.recipient == email, OutboxMessage.kind == kind)
        )  # fmt: skip
    assert sent == MAX_MESSAGES_PER_ADDRESS


def _clearing_forgets_only_the_keys_named(idp: CountersIdp, tmp_path: Path) -> None:
    """``CounterStore.clear`` (a passkey sign-in's, idp.services.sign_in ``owner_proved``): the
    keys named are forgotten, the ones that had failures named back, any other key kept."""
    now = utcnow()
    named, counted, other = (f"otp:{secrets.token_hex(4)}" for _ in range(3))
    with app_of(idp.live, tmp_path) as flask_app, flask_app.app_context():
        store = store_of(idp)
        store.count([(counted, COUNTER_LIFETIME), (other, COUNTER_LIFETIME)], now)
        store.count([(counted, COUNTER_LIFETIME)], now)
        assert store.clear([named, counted]) == [counted]
        db.session.commit()
        assert store.get(counted)[0] == 0
        assert store.get(other)[0] == 1
        assert store.clear([named, counted]) == []


def test_clearing_forgets_only_the_keys_named_in_the_database(
    db_live: CountersIdp, tmp_path: Path
) -> None:
    _clearing_forgets_only_the_keys_named(db_live, tmp_path)


def test_clearing_forgets_only_the_keys_named_in_redis(
    redis_live: CountersIdp, tmp_path: Path
) -> None:
    _clearing_forgets_only_the_keys_named(redis_live, tmp_path)


# == Redis: locks are durable, an outage refuses sign-ins clearly =================================
def test_a_lock_survives_losing_redis_and_only_an_admin_lifts_it(
    redis_live: CountersIdp, tmp_path: Path
) -> None:
    """The lock is in the database; losing Redis (FLUSHALL, a restart without
    persistence) may reset a backoff, never lift a lock."""
    assert redis_live.redis is not None
    live = redis_live.live
    email = new_email("locked")
    live.create_user(email, PASSWORD)
    address = addresses(1)[0]
    with app_of(live, tmp_path) as flask_app, flask_app.test_request_context():
        key = f"pwd:{email_key(email)}"
        for _ in range(LOCK_AFTER - 1):
            store_of(redis_live).count([(key, COUNTER_LIFETIME)], utcnow() - timedelta(days=1))

    def sign_in(password: str) -> requests.Response:
        browser = visitor(live, address)
        try:
            return browser.password_step(email, password)
        finally:
            browser.close()

    hundredth = sign_in("not the password")
    assert messages.GENERIC_FAILURE in text_of(hundredth)
    assert messages.LOCKED in text_of(sign_in(PASSWORD))

    client = redis_live.redis.client()
    try:
        client.flushall()
    finally:
        client.close()
    assert messages.LOCKED in text_of(sign_in(PASSWORD))
    with app_of(live, tmp_path) as flask_app, flask_app.app_context():
        assert db.session.get(FactorLock, key) is not None

    live.run("users", "unlock", email)
    assert sign_in(PASSWORD).status_code == 302


def test_redis_down_refuses_sign_ins_with_a_503_and_nothing_else(
    redis_live: CountersIdp, tmp_path: Path
) -> None:
    """With Redis stopped, a password sign-in and the passkey options answer 503
    (a page, and JSON for the JSON endpoint), each refusal counted, the first audited; a signed-in
    session, discovery, the JWKS and the sign-in page itself carry on."""
    assert redis_live.redis is not None
    live = redis_live.live
    email = new_email("outage")
    live.create_user(email, PASSWORD)
    signed_in = visitor(live)
    signed_in.sign_in_with_password(email, PASSWORD)
    stranger = visitor(live)
    form = stranger.csrf_field("/login")
    passkey_headers = stranger.csrf_header("/login")

    redis_live.redis.stop()
    try:
        refused = stranger.post("/login", data={"csrf_token": form, "email": email,
                                                "password": PASSWORD})  # fmt: skip
        assert refused.status_code == 503
        assert TITLE in text_of(refused)
        assert 'id="temporarily-unavailable"' in refused.text
        assert refused.headers["Retry-After"].isdigit()
        options = stranger.post("/login/passkey/options", json={}, headers=passkey_headers)
        assert options.status_code == 503
        assert options.headers["Content-Type"].startswith("application/json")
        assert options.json()["error"] == JSON_ERROR

        # What does not need Redis is not affected.
        assert signed_in.get("/account").status_code == 200
        assert stranger.get("/login").status_code == 200
        assert stranger.get("/.well-known/openid-configuration").status_code == 200
        assert stranger.get("/jwks").status_code == 200

        scrape = requests.get(live.url + "/metrics", timeout=30,
                              headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # fmt: skip
        assert scrape.status_code == 200
        for endpoint in ("login.login", "login.passkey_options"):
            line = f'idp_dependency_refusals_total{{dependency="redis",endpoint="{endpoint}"}}'
            assert line in scrape.text, scrape.text[-2000:]
    finally:
        redis_live.redis.start()
        signed_in.close()
        stranger.close()

    with app_of(live, tmp_path) as flask_app, flask_app.app_context():
        refusals = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "dependency.unavailable")
        ).all()
    # One row per worker and breaker window (docs/operations.md, "Redis"): the first refusal's;
    # the passkey options refused within its window are in the metric above (a slow machine may
    # have let the window pass between the two: a row of its own then).
    first = min(refusals, key=lambda event: event.at)
    assert first.details["endpoint"] == "login.login"
    assert len(refusals) <= 2
    assert sum(event.details["refused"] for event in refusals) == len(refusals)
    assert {(e.outcome, e.details["dependency"]) for e in refusals} == {("failure", "redis")}
    # Nothing was counted meanwhile in the database instead (the counters stay in Redis).
    with app_of(live, tmp_path) as flask_app, flask_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AttemptCounter)) == 0
