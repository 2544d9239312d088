"""Round trips the sign-in paths no longer make (docs/performance.md, "Optimisations, measured"),
each beside the rule it must not weaken: a TOTP step is still claimed by one conditional UPDATE,
a success still resets a real failure counter, a WebAuthn challenge is still spent once.

Statements are counted on the engine (``before_cursor_execute``) for one request at a time, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyotp
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from idp.extensions import db
from idp.models import AttemptCounter, TotpCredential, User
from idp.models.base import utcnow
from idp.services.rate_limits import AttemptLimiter, FactorLocks, RedisCounters
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, query_of
from tests.support.http_flows import ParallelPasskeyAnswer
from tests.support.live import LiveIdp
from tests.support.passkey_flow import PasskeyPages, csrf_meta, page_options

PASSWORD = "correct horse battery staple 7"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs, one line each, upper-cased."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()).upper())

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _count(sent: list[str], predicate: Callable[[str], bool]) -> int:
    return sum(1 for statement in sent if predicate(statement))


def _user_with_totp(app: Flask) -> tuple[str, str]:
    """A user with a password and a confirmed authenticator app, nothing else (no backup codes,
    no passkey)."""
    user = create_user(app, email=f"totp-{secrets.token_hex(4)}@example.com", password=PASSWORD)
    secret = pyotp.random_base32(length=32)
    with app.app_context():
        fernet = app.extensions["idp"].totp_fernet
        encrypted = fernet.encrypt(secret.encode()).decode()
        db.session.add(
            TotpCredential(user_id=user.id, confirmed_at=utcnow(), secret_encrypted=encrypted)
        )
        db.session.commit()
    return user.email, secret


def _post_password(browser: FlaskClient, email: str, password: str) -> Any:
    page = browser.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": email, "password": password}
    return browser.post("/login", data=form)


def test_a_totp_code_reads_the_credential_once_and_claims_its_step_in_one_write(
    storage_app: Flask,
) -> None:
    email, secret = _user_with_totp(storage_app)
    browser = storage_app.test_client()
    assert _post_password(browser, email, PASSWORD).headers["Location"] == "/login/second-step"
    page = browser.get("/login/second-step")
    code = pyotp.TOTP(secret).now()
    form = {"csrf_token": csrf_token(page.text), "code": code}
    with statements(storage_app) as sent:
        response = browser.post("/login/second-step", data=form)
    assert response.status_code == 302, response.text
    assert _count(sent, lambda s: s.startswith("SELECT") and "FROM TOTP_CREDENTIALS" in s) == 1
    writes = [s for s in sent if s.startswith("UPDATE TOTP_CREDENTIALS")]
    # RFC 6238 5.2: the one write is the conditional UPDATE that claims the step (spend once).
    assert len(writes) == 1
    assert "LAST_USED_STEP <" in writes[0]
    # The page is not shown again: which other factors it would offer is not looked up.
    assert _count(sent, lambda s: "FROM PASSKEYS" in s or "FROM BACKUP_CODES" in s) == 0
    with storage_app.app_context():
        stored = db.session.scalar(
            select(TotpCredential.last_used_step).join(User).where(User.email == email)
        )
    current = int(utcnow().timestamp()) // 30
    assert stored in (current, current - 1)

    # The claimed step is never accepted again: a second browser with the same code fails.
    again = storage_app.test_client()
    _post_password(again, email, PASSWORD)
    page = again.get("/login/second-step")
    replay = again.post("/login/second-step", data={"csrf_token": csrf_token(page.text),
                                                    "code": code})  # fmt: skip
    assert replay.status_code == 401


def test_the_password_step_counts_no_backup_codes_and_counts_each_counter_in_one_statement(
    storage_app: Flask,
) -> None:
    email, _secret = _user_with_totp(storage_app)
    browser = storage_app.test_client()
    page = browser.get("/login")
    with statements(storage_app) as sent:
        response = browser.post("/login", data={"csrf_token": csrf_token(page.text),
                                                "email": email, "password": PASSWORD})  # fmt: skip
    assert response.headers["Location"] == "/login/second-step"
    assert _count(sent, lambda s: "FROM BACKUP_CODES" in s) == 0
    # docs/security.md: the attempt is counted before it is checked, each counter (account,
    # address) by one upsert that returns what the check needs: no separate read.
    assert _count(sent, lambda s: s.startswith("INSERT INTO ATTEMPT_COUNTERS")) == 2
    assert _count(sent, lambda s: s.startswith("SELECT") and "FROM ATTEMPT_COUNTERS" in s) == 0
    # The success releases the reservation: the account's count reset, the address's taken back.
    assert _count(sent, lambda s: s.startswith("DELETE FROM ATTEMPT_COUNTERS")) == 1
    assert _count(sent, lambda s: s.startswith("UPDATE ATTEMPT_COUNTERS")) == 1


def test_a_success_after_a_failure_still_resets_the_counter(storage_app: Flask) -> None:
    email, _secret = _user_with_totp(storage_app)
    assert _post_password(storage_app.test_client(), email, "not the password").status_code == 401
    with storage_app.app_context():
        counted = db.session.scalars(select(AttemptCounter.key).where(
            AttemptCounter.key.startswith("pwd:"))).all()  # fmt: skip
    assert len(counted) == 1
    with statements(storage_app) as sent:
        browser = storage_app.test_client()
        assert _post_password(browser, email, PASSWORD).status_code == 302
    assert _count(sent, lambda s: s.startswith("DELETE FROM ATTEMPT_COUNTERS")) == 1
    with storage_app.app_context():
        assert db.session.get(AttemptCounter, counted[0]) is None


def test_redis_counts_both_counters_in_one_round_trip_and_a_success_releases_them(
    app: Flask,
) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10, socket_connect_timeout=5)
    key = AttemptLimiter.account_key("pwd", f"test-{secrets.token_hex(8)}")
    address = f"test-address-{secrets.token_hex(8)}"
    calls: list[str] = []

    class Watched(RedisCounters):
        def count(self, keys: Any, now: Any) -> Any:
            calls.append("count")
            return super().count(keys, now)

    now = utcnow()
    address_key = AttemptLimiter.address_key(address, now)
    try:
        with app.app_context():
            limiter = AttemptLimiter(Watched(client), FactorLocks(db.session()))
            failed = limiter.reserve(key, address, now)
            assert failed.verdict.allowed
            limiter.failed(failed, now)
            assert calls == ["count"]  # the account's and the address's counter: one script
            assert RedisCounters(client).get(key)[0] == 1

            attempt = limiter.reserve(key, address, now)
            assert attempt.verdict.allowed
            assert (attempt.count, RedisCounters(client).get(address_key)[0]) == (2, 2)
            limiter.succeeded(attempt)
            assert RedisCounters(client).get(key) == (0, None)
            assert RedisCounters(client).get(address_key)[0] == 1  # the failure stays counted
    finally:
        client.delete(f"idp:fail:{key}", f"idp:fail-at:{key}")
        client.delete(f"idp:fail:{address_key}", f"idp:fail-at:{address_key}")
        client.close()


def test_a_passkey_challenge_is_spent_and_read_in_one_statement(storage_app: Flask) -> None:
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator()
    assert pages.add_passkey(authenticator).status_code == 201

    visitor = PasskeyPages(storage_app.test_client())
    ceremony = visitor.authentication_options()
    credential = authenticator.get(ceremony["publicKey"])
    csrf = visitor.csrf()
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
            "request": "", "next": ""}  # fmt: skip
    with statements(storage_app) as sent:
        verified = visitor.browser.post("/login/passkey/verify", json=body,
                                        headers={"X-CSRFToken": csrf})  # fmt: skip
    assert verified.status_code == 200, verified.text
    on_challenges = [s for s in sent if "WEBAUTHN_CHALLENGES" in s]
    assert len(on_challenges) == 1
    assert on_challenges[0].startswith("UPDATE")
    assert "CONSUMED_AT IS NULL" in on_challenges[0]
    assert "RETURNING" in on_challenges[0]

    # Spent once: the same answer again is refused.
    replayed = visitor.browser.post("/login/passkey/verify", json=body,
                                    headers={"X-CSRFToken": csrf})  # fmt: skip
    assert replayed.status_code != 200


PARALLEL = 12


def test_parallel_answers_to_one_database_challenge_exactly_one_signs_in(live: LiveIdp) -> None:
    """The challenge's spend-and-read (one ``UPDATE ... RETURNING``) under real parallel requests
    to a multi-process server, on SQLite and PostgreSQL: one of N identical answers wins."""
    email = f"parallel-{secrets.token_hex(4)}@example.com"
    live.create_user(email, PASSWORD)
    responses = ParallelPasskeyAnswer.prepare(live.url, email, PASSWORD).send(PARALLEL)
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert {r.status_code for r in responses if r.status_code != 200} == {400}


def _first_words(statement: str) -> str:
    """``INSERT INTO AUDIT_EVENTS``, ``SELECT ... FROM CLIENTS``: a statement's verb and table."""
    words = statement.split()
    if words[0] == "SELECT":
        return "SELECT " + words[words.index("FROM") + 1]
    if words[0] == "INSERT":
        return "INSERT " + words[2]
    return f"{words[0]} {words[1]}"


def test_a_passkey_sign_in_through_the_code_flow_and_its_statements(storage_app: Flask) -> None:
    """The whole sign-in a relying party starts (docs/architecture.md, "A passkey sign-in, step
    by step"): four requests, since the sign-in page carries the passkey request options and the
    verify answers with the redirect URI and the code; each request's statements, pinned, with
    the rules among them: the page writes nothing, the challenge is spent by one conditional
    INSERT, the sign-in and the code are audited in the same transaction, the pending request is
    spent by one conditional UPDATE."""
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    assert pages.add_passkey(authenticator).status_code == 201
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))

    with statements(storage_app) as sent:
        location = rp.authorize().headers["Location"]
    assert [_first_words(s) for s in sent] == [
        "SELECT CLIENTS", "INSERT ATTEMPT_COUNTERS", "INSERT PENDING_AUTHORIZATIONS",
    ]  # fmt: skip

    with statements(storage_app) as sent:
        page = rp.browser.get(location)
    assert page.status_code == 200
    assert [_first_words(s) for s in sent] == ["SELECT PENDING_AUTHORIZATIONS"]

    ceremony, csrf = page_options(page.text), csrf_meta(page.text)
    body = {"challenge_id": ceremony["challenge_id"], "next": "",
            "credential": authenticator.get(ceremony["publicKey"]),
            "request": query_of(location)["request"]}  # fmt: skip
    with statements(storage_app) as sent:
        verified = rp.browser.post("/login/passkey/verify", json=body,
                                   headers={"X-CSRFToken": csrf})  # fmt: skip
    assert verified.status_code == 200, verified.text
    assert [_first_words(s) for s in sent] == [
        "SELECT PASSKEYS",
        "INSERT WEBAUTHN_CHALLENGES",  # the spend, once the answer verified
        "INSERT AUDIT_EVENTS",  # login.passkey
        "UPDATE PASSKEYS",  # last use, backup state
        "SELECT PENDING_AUTHORIZATIONS",
        "INSERT BROWSER_SESSIONS",
        "UPDATE PENDING_AUTHORIZATIONS",  # the spend: WHERE consumed_at IS NULL
        "INSERT GRANTS",
        "INSERT AUTHORIZATION_CODES",
        "INSERT AUDIT_EVENTS",  # authorization.code_issued
    ]
    assert "ON CONFLICT" in sent[1]
    assert "RETURNING" in sent[1]
    assert "CONSUMED_AT IS NULL" in sent[6]
    callback = verified.get_json()["redirect"]
    assert callback.startswith(rp.registered.redirect_uri + "?")

    assert rp.browser.get("/jwks").status_code == 200  # this process's key cache, loaded
    with statements(storage_app) as sent:
        exchanged = rp.exchange(query_of(callback)["code"])
    assert exchanged.status_code == 200, exchanged.text
    assert [_first_words(s) for s in sent] == [
        "SELECT CLIENTS", "SELECT AUTHORIZATION_CODES", "UPDATE AUTHORIZATION_CODES",
        "INSERT ACCESS_TOKENS", "INSERT REFRESH_TOKENS",
    ]  # fmt: skip
