"""Round trips the sign-in paths no longer make (docs/performance.md, "Before and after, per
change"), each beside the rule it must not weaken: a TOTP step is still claimed by one
conditional UPDATE, a success still resets a real failure counter, a WebAuthn challenge is still
spent once, and an access token found by its hash at userinfo and introspection is still refused
when it was never recorded, revoked, expired, or its grant revoked or its user disabled.

Statements are counted on the engine (``before_cursor_execute``) for one request at a time, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pyotp
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jws, jwt
from sqlalchemy import event, select, update

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import AccessToken, AttemptCounter, AuditEvent, Grant, TotpCredential, User
from idp.models.base import utcnow
from idp.services import audit
from idp.services.clients import ClientService
from idp.services.crypto import token_hash
from idp.services.rate_limits import AttemptLimiter, FactorLocks
from idp.services.redis_counters import RedisCounters
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import create_client, create_user
from tests.support.flow import (
    RelyingParty,
    csrf_token,
    query_of,
    shown_address,
    shown_pending_id,
)
from tests.support.http_flows import ParallelPasskeyAnswer
from tests.support.live import LiveIdp
from tests.support.passkey_flow import PasskeyPages, csrf_meta, page_options

PASSWORD = "correct horse battery staple 7"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def statements(app: Flask, *, commits: bool = False) -> Iterator[list[str]]:
    """The SQL statements sent while the block runs, one line each, upper-cased; with
    ``commits``, each commit too, as a line ``COMMIT``."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(" ".join(statement.split()).upper())

    def committed(_conn: Any) -> None:
        sent.append("COMMIT")

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    if commits:
        event.listen(engine, "commit", committed)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        if commits:
            event.remove(engine, "commit", committed)


#: The statement counts here must not depend on the clock: what a test fills in the node's caches
#: stays trusted until it ends (tests/conftest.py ``node_caches_held``).
pytestmark = pytest.mark.usefixtures("node_caches_held")


def _verbs(sent: list[str]) -> list[str]:
    """What each statement does, and to which table: ``SELECT partial_logins``, ``INSERT
    attempt_counters``, ``COMMIT``."""
    verbs = []
    for statement in sent:
        verb = statement.split(None, 1)[0]
        if verb == "COMMIT":
            verbs.append(verb)
            continue
        if verb == "WITH":
            verbs.append(" + ".join(f"{v} {table.lower()}" for v, table in _writes_of(statement)))
            continue
        if verb == "SELECT":
            table = _outer_from(statement)
        else:
            marker = {"INSERT": "INSERT INTO ", "UPDATE": "UPDATE ", "DELETE": "DELETE FROM "}[verb]
            table = statement.split(marker, 1)[1].split(None, 1)[0]
        name = table.strip('"').lower()
        verbs.append(f"{verb} {name}")
    return verbs


def _outer_from(statement: str) -> str:
    """The first table of a SELECT's own FROM (not of a subquery among its columns)."""
    depth = 0
    for i, char in enumerate(statement):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and statement.startswith(" FROM ", i):
            return statement[i + 6 :].split(None, 1)[0]
    raise AssertionError(statement)


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
    page = _post_password(browser, email, PASSWORD)
    assert shown_address(page) == "/login/second-step"
    code = pyotp.TOTP(secret).now()
    form = {"csrf_token": csrf_token(page.text), "code": code}
    with statements(storage_app) as sent:
        response = browser.post("/login/second-step", data=form)
    assert response.status_code == 302, response.text
    # The credential is read once, with the partial sign-in and its user (one statement).
    reads = [s for s in sent if s.startswith("SELECT")]
    assert len(reads) == 1
    assert "FROM PARTIAL_LOGINS" in reads[0]
    assert "JOIN TOTP_CREDENTIALS" in reads[0]
    writes = [s for s in sent if s.startswith("UPDATE TOTP_CREDENTIALS")]
    # RFC 6238 5.2: the one write is the conditional UPDATE that claims the step (spend once).
    assert len(writes) == 1
    assert "LAST_USED_STEP <" in writes[0]
    # The page is not shown again: which other factors it would offer is not looked up.
    assert _count(sent, lambda s: "PASSKEYS" in s or "BACKUP_CODES" in s) == 0
    with storage_app.app_context():
        stored = db.session.scalar(
            select(TotpCredential.last_used_step).join(User).where(User.email == email)
        )
    current = int(utcnow().timestamp()) // 30
    assert stored in (current, current - 1)

    # The claimed step is never accepted again: a second browser with the same code fails.
    again = storage_app.test_client()
    page = _post_password(again, email, PASSWORD)
    replay = again.post("/login/second-step", data={"csrf_token": csrf_token(page.text),
                                                    "code": code})  # fmt: skip
    assert replay.status_code == 401


def test_the_password_step_counts_no_backup_codes_and_counts_each_counter_in_one_statement(
    storage_app: Flask,
) -> None:
    email, _secret = _user_with_totp(storage_app)
    browser = storage_app.test_client()
    page = browser.get("/login")
    with statements(storage_app, commits=True) as sent:
        response = browser.post("/login", data={"csrf_token": csrf_token(page.text),
                                                "email": email, "password": PASSWORD})  # fmt: skip
    assert shown_address(response) == "/login/second-step"
    # Backup codes only back up a second step: the account's one read (below) asks whether one
    # is left beside a passkey flagged as a possible clone, and no other statement reads them.
    assert _count(sent, lambda s: "BACKUP_CODES" in s and "FROM USERS" not in s) == 0
    # docs/security.md: the attempt is counted before it is checked: the account's and the
    # address's counters by one upsert that returns what the check needs, the account's lock
    # included (no separate read), committed at once so that parallel attempts see it.
    counting = [s for s in sent if s.startswith("INSERT INTO ATTEMPT_COUNTERS")]
    assert len(counting) == 1
    assert "FROM FACTOR_LOCKS" in counting[0]
    assert "RETURNING" in counting[0]
    assert sent.index(counting[0]) == 0
    assert sent[1] == "COMMIT"
    assert _count(sent, lambda s: s.startswith("SELECT") and "FROM ATTEMPT_COUNTERS" in s) == 0
    assert _count(sent, lambda s: s.startswith("SELECT") and "FROM FACTOR_LOCKS" in s) == 0
    # The success releases the reservation: the account's count reset, the address's taken back.
    assert _count(sent, lambda s: s.startswith("DELETE FROM ATTEMPT_COUNTERS")) == 1
    assert _count(sent, lambda s: s.startswith("UPDATE ATTEMPT_COUNTERS")) == 1
    # The account and the second steps it offers, which the page it answers with shows: one
    # read (the page reads nothing more).
    reads = [s for s in sent if s.startswith("SELECT")]
    assert len(reads) == 1
    assert "FROM USERS" in reads[0]
    assert "TOTP_CREDENTIALS" in reads[0]


#: A password + TOTP sign-in, request by request (docs/performance.md): the statements and
#: commits each request sends, in order, on SQLite and PostgreSQL alike. The password step
#: answers with the second step's page; its address, asked for again (a reload), reads once.
SIGN_IN_ROUND_TRIPS = {
    "POST /login": [
        "INSERT attempt_counters",  # both counters and the account's lock (counted first)
        "COMMIT",
        "SELECT users",  # the account and the second steps it offers (the page's choices)
        "DELETE attempt_counters",  # the success: the account's count reset ...
        "UPDATE attempt_counters",  # ... and the address's taken back, committed with it
        # login.password, a prepared Core INSERT sent when the step is audited (no ORM object
        # left for the flush), in the transaction of the partial sign-in
        "INSERT audit_events",
        "INSERT partial_logins",
        "COMMIT",
    ],
    "POST /login/second-step": [
        "SELECT partial_logins",  # its user and their authenticator app with it
        "INSERT attempt_counters",
        "COMMIT",
        "UPDATE totp_credentials",  # the step, claimed once (RFC 6238 5.2)
        "DELETE attempt_counters",
        "UPDATE attempt_counters",
        "INSERT audit_events",  # login.totp when it is audited (a prepared Core INSERT)
        "UPDATE partial_logins",  # the partial sign-in, spent once
        "INSERT browser_sessions",  # inserted when it is started (a prepared Core INSERT)
        # the user's unspent rescue links end with a full sign-in (docs/security.md, Sessions)
        "UPDATE login_links",
        "COMMIT",
    ],
}
#: PostgreSQL sends the session's INSERT and the rescue links' UPDATE as one statement
#: (idp.services.sessions ``_insert_ending_rescue_links``); everything else is the same.
SIGN_IN_ROUND_TRIPS_TOGETHER = {
    **SIGN_IN_ROUND_TRIPS,
    "POST /login/second-step": [
        *SIGN_IN_ROUND_TRIPS["POST /login/second-step"][:-3],
        "INSERT browser_sessions + UPDATE login_links",
        "COMMIT",
    ],
}


def test_a_password_and_totp_sign_in_sends_these_statements_and_commits(
    storage_app: Flask,
) -> None:
    email, secret = _user_with_totp(storage_app)
    browser = storage_app.test_client()
    page = browser.get("/login")
    sent: dict[str, list[str]] = {}
    with statements(storage_app, commits=True) as each:
        response = browser.post("/login", data={"csrf_token": csrf_token(page.text),
                                                "email": email, "password": PASSWORD})  # fmt: skip
    assert shown_address(response) == "/login/second-step"
    sent["POST /login"] = _verbs(each)
    with statements(storage_app, commits=True) as each:
        page = browser.get("/login/second-step")  # a reload of the page the password answered
    assert page.status_code == 200
    assert _verbs(each) == ["SELECT partial_logins"]  # its user and factors with it
    form = {"csrf_token": csrf_token(response.text), "code": pyotp.TOTP(secret).now()}
    with statements(storage_app, commits=True) as each:
        response = browser.post("/login/second-step", data=form)
    assert response.status_code == 302, response.text
    sent["POST /login/second-step"] = _verbs(each)
    together = _together(storage_app)
    assert sent == (SIGN_IN_ROUND_TRIPS_TOGETHER if together else SIGN_IN_ROUND_TRIPS)
    # Every event of the sign-in is audited, in the transactions above.
    with storage_app.app_context():
        kinds = db.session.scalars(
            select(AuditEvent.kind).join(User, AuditEvent.subject_id == User.id)
            .where(User.email == email).order_by(AuditEvent.id)
        ).all()  # fmt: skip
    assert kinds == ["login.password", "login.totp"]


def test_a_success_after_a_failure_still_resets_the_counter(storage_app: Flask) -> None:
    email, _secret = _user_with_totp(storage_app)
    assert _post_password(storage_app.test_client(), email, "not the password").status_code == 401
    with storage_app.app_context():
        counted = db.session.scalars(select(AttemptCounter.key).where(
            AttemptCounter.key.startswith("pwd:"))).all()  # fmt: skip
    assert len(counted) == 1
    with statements(storage_app) as sent:
        browser = storage_app.test_client()
        assert shown_address(_post_password(browser, email, PASSWORD)) == "/login/second-step"
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


def test_a_refresh_spends_its_token_and_checks_its_grant_in_one_statement(
    storage_app: Flask,
) -> None:
    """docs/performance.md: the rotation is the spend (one ``UPDATE ... RETURNING`` that reads
    the grant's revocation and the user's disabling by subquery), the new refresh token's and
    access token's INSERTs; the client comes from this process's cache (the code exchange
    before it read it). The replay rule beside it: the old token presented again after its
    successor was used revokes the grant, so the newest token is refused too (RFC 9700 4.14.2)."""
    user = create_user(storage_app)
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    tokens = rp.tokens_for(user)
    with statements(storage_app) as sent:
        response = rp.refresh(tokens["refresh_token"])
    assert response.status_code == 200, response.text
    spends = [s for s in sent if s.startswith("UPDATE REFRESH_TOKENS")]
    assert len(spends) == 1
    for part in ("RETURNING", "FROM GRANTS", "FROM USERS"):
        assert part in spends[0]
    assert _count(sent, lambda s: s.startswith("SELECT")) == 0
    # The new tokens' rows: one statement on PostgreSQL, one each on SQLite.
    inserts = [_first_words(s) for s in sent[1:]]
    if _together(storage_app):
        assert inserts == ["INSERT ACCESS_TOKENS + REFRESH_TOKENS"]
    else:
        assert inserts == ["INSERT ACCESS_TOKENS", "INSERT REFRESH_TOKENS"]

    # Once the successor was used (no retry of a lost answer then), the old token is a replay.
    used = rp.refresh(response.get_json()["refresh_token"])
    assert used.status_code == 200, used.text
    assert rp.refresh(tokens["refresh_token"]).get_json()["error"] == "invalid_grant"
    assert rp.refresh(used.get_json()["refresh_token"]).get_json()["error"] == "invalid_grant"


def test_client_credentials_read_no_client_when_cached_and_insert_one_row(
    storage_app: Flask,
) -> None:
    """A client-credentials grant is one INSERT (the access token, revocable) once this process
    holds the client (idp.services.client_cache); disabling the client here counts at once."""
    machine = create_client(storage_app, name="m2m", grant_types=["client_credentials"])
    browser = storage_app.test_client()
    form = {"grant_type": "client_credentials"}
    auth = (machine.client_id, machine.client_secret or "")
    assert browser.post("/token", data=form, auth=auth).status_code == 200  # reads the client
    with statements(storage_app) as sent:
        response = browser.post("/token", data=form, auth=auth)
    assert response.status_code == 200, response.text
    assert _count(sent, lambda s: "FROM CLIENTS" in s) == 0
    assert _count(sent, lambda s: s.startswith("INSERT INTO ACCESS_TOKENS")) == 1
    assert len(sent) == 1, sent

    with storage_app.app_context():
        rt = storage_app.extensions["idp"]
        clients = ClientService(db.session(), rt.client_secrets)
        found = clients.get(machine.client_id)
        assert found is not None
        clients.disable(found)
        db.session.commit()
    refused = browser.post("/token", data=form, auth=auth)
    assert (refused.status_code, refused.get_json()["error"]) == (401, "invalid_client")


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


# -- bearer endpoints: the access token by its hash -----------------------------------------------
def _relying_party(app: Flask) -> RelyingParty:
    return RelyingParty(app.test_client(), create_client(app))


def _basic(rp: RelyingParty) -> dict[str, str]:
    raw = f"{rp.registered.client_id}:{rp.registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _introspect(rp: RelyingParty, token: str, **extra: str) -> dict[str, Any]:
    response = rp.browser.post("/introspect", data={"token": token, **extra}, headers=_basic(rp))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.get_json()
    return body


def _refused(rp: RelyingParty, token: str) -> bool:
    """Refused at both bearer endpoints: userinfo's 401 invalid_token (RFC 6750 3.1) and an
    inactive introspection (RFC 7662 2.2)."""
    answer = rp.userinfo(token)
    refused_at_userinfo = (
        answer.status_code == 401 and 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    )
    return refused_at_userinfo and _introspect(rp, token) == {"active": False}


def _accepted(rp: RelyingParty, token: str) -> bool:
    return rp.userinfo(token).status_code == 200 and _introspect(rp, token)["active"] is True


def test_userinfo_reads_the_token_its_grant_and_its_user_in_one_statement(
    storage_app: Flask,
) -> None:
    user = create_user(storage_app)
    rp = _relying_party(storage_app)
    access_token = rp.tokens_for(user, scope="openid profile email")["access_token"]
    with statements(storage_app) as sent:
        response = rp.userinfo(access_token)
    assert response.status_code == 200, response.text
    assert response.get_json() == {
        "sub": user.id, "name": "Ada Lovelace", "preferred_username": user.email,
        "email": user.email,
        "email_verified": False,
    }  # fmt: skip
    # No signature verification, no ORM load: the token found by its hash with what decides
    # whether it is live (its grant's revocation, its user's state) and what the claims need.
    assert len(sent) == 1, sent
    assert "FROM ACCESS_TOKENS" in sent[0]
    assert "JOIN GRANTS" in sent[0]
    assert "JOIN USERS" in sent[0]
    assert "ACCESS_TOKENS.TOKEN_HASH =" in sent[0]


def test_introspection_is_the_client_lookup_and_one_statement(storage_app: Flask) -> None:
    user = create_user(storage_app)
    rp = _relying_party(storage_app)
    tokens = rp.tokens_for(user, scope="openid offline_access")
    with statements(storage_app) as sent:
        body = _introspect(rp, tokens["access_token"])
    assert body["active"] is True
    assert (body["sub"], body["token_type"]) == (user.id, "Bearer")
    on_tokens = [s for s in sent if "ACCESS_TOKENS" in s]
    assert len(on_tokens) == 1
    assert "ACCESS_TOKENS.TOKEN_HASH =" in on_tokens[0]
    client_lookups = _count(sent, lambda s: s.startswith("SELECT") and "FROM CLIENTS" in s)
    assert client_lookups <= 1
    assert len(sent) == client_lookups + 1, sent

    # A refresh token cannot be a JWT: it is looked up among refresh tokens only, hint or not.
    with statements(storage_app) as sent:
        body = _introspect(rp, tokens["refresh_token"])
    assert body["active"] is True
    assert "token_type" not in body
    assert _count(sent, lambda s: "ACCESS_TOKENS" in s) == 0


def test_bearer_endpoints_refuse_unrecorded_revoked_expired_and_disabled_users_tokens(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """The hash proves the token was issued here; everything else is still checked, in the same
    statement, on the application's clock (docs/security.md)."""
    user = create_user(storage_app)
    rp = _relying_party(storage_app)

    def fresh() -> str:
        access_token: str = rp.tokens_for(user)["access_token"]
        assert _accepted(rp, access_token)
        return access_token

    # A valid signature is not enough: the same claims signed again (ES256 signatures are
    # randomised, so the string differs), and a token with a new jti, neither ever recorded.
    issued = fresh()
    compact = jws.extract_compact(issued.encode())
    with storage_app.app_context():
        key = storage_app.extensions["idp"].keys.by_kid(db.session(), compact.protected["kid"])
        assert key is not None
    claims = jwt.decode(issued, key.private_key).claims
    resigned = jwt.encode(compact.protected, claims, key.private_key, algorithms=["ES256"])
    never_issued = jwt.encode(compact.protected, {**claims, "jti": secrets.token_urlsafe(16)},
                              key.private_key, algorithms=["ES256"])  # fmt: skip
    for forged in (resigned, never_issued):
        assert forged != issued
        assert jwt.decode(forged, key.private_key).claims["sub"] == user.id  # a valid signature
        assert _refused(rp, forged)
    assert _accepted(rp, issued)

    # Revoked by its client (RFC 7009).
    revoked = fresh()
    answer = rp.browser.post("/revoke", data={"token": revoked}, headers=_basic(rp))
    assert answer.status_code == 200
    assert _refused(rp, revoked)

    # Its grant revoked (logout, a replayed code or refresh token), the token's row untouched.
    of_revoked_grant = fresh()
    with storage_app.app_context():
        grant_id = db.session.scalar(select(AccessToken.grant_id).where(
            AccessToken.token_hash == token_hash(of_revoked_grant)))  # fmt: skip
        db.session.execute(update(Grant).where(Grant.id == grant_id).values(revoked_at=utcnow()))
        db.session.commit()
    assert _refused(rp, of_revoked_grant)

    # Its user disabled: only the user's row changes here (disabling also revokes the tokens,
    # test_admin_users.py), so the join itself refuses it.
    of_disabled_user = fresh()
    with storage_app.app_context():
        db.session.execute(update(User).where(User.id == user.id).values(disabled_at=utcnow()))
        db.session.commit()
    assert _refused(rp, of_disabled_user)

    # Expired on the application's clock (another user: this one is disabled now).
    user = create_user(storage_app, email=f"expiring-{secrets.token_hex(4)}@example.com")
    expiring = fresh()
    # (The JWT's exp, which the row keeps, counts from the system's time at minting: the frozen
    # clock stands a few seconds earlier, so it moves a minute past the lifetime.)
    ttl = storage_app.extensions["idp"].settings.access_token_ttl
    clock.advance(timedelta(seconds=ttl + 60))
    assert _refused(rp, expiring)


def test_a_token_issued_before_hashes_were_recorded_is_still_found_by_its_signature(
    storage_app: Flask,
) -> None:
    """Migration 0014: rows of tokens issued before it have no hash; they keep working until
    they expire, and every refusal still applies to them."""
    user = create_user(storage_app)
    rp = _relying_party(storage_app)
    access_token = rp.tokens_for(user)["access_token"]
    with storage_app.app_context():
        recorded = AccessToken.token_hash == token_hash(access_token)
        db.session.execute(update(AccessToken).where(recorded).values(token_hash=None))
        db.session.commit()
    assert _accepted(rp, access_token)
    with storage_app.app_context():
        db.session.execute(update(User).where(User.id == user.id).values(disabled_at=utcnow()))
        db.session.commit()
    assert _refused(rp, access_token)


def test_revoking_an_access_token_is_its_lookup_and_one_conditional_update(
    storage_app: Flask,
) -> None:
    user = create_user(storage_app)
    rp = _relying_party(storage_app)
    access_token = rp.tokens_for(user)["access_token"]
    with statements(storage_app) as sent:
        answer = rp.browser.post("/revoke", data={"token": access_token}, headers=_basic(rp))
    assert answer.status_code == 200, answer.text
    on_tokens = [s for s in sent if "ACCESS_TOKENS" in s]
    assert len(on_tokens) == 2, on_tokens
    assert on_tokens[0].startswith("SELECT")
    # RFC 7009 2.2: revoked once; a second revocation keeps the first time.
    assert on_tokens[1].startswith("UPDATE ACCESS_TOKENS")
    assert "REVOKED_AT IS NULL" in on_tokens[1]
    assert _refused(rp, access_token)


def _first_words(statement: str) -> str:
    """``INSERT AUDIT_EVENTS``, ``SELECT CLIENTS``: a statement's verb and table; the writes of
    one statement with data-modifying WITH clauses (PostgreSQL) in their order, ``INSERT GRANTS +
    AUTHORIZATION_CODES + AUDIT_EVENTS``, or with each verb where they differ, ``INSERT
    BROWSER_SESSIONS + UPDATE LOGIN_LINKS``."""
    words = statement.split()
    if words[0] == "SELECT":
        return "SELECT " + words[words.index("FROM") + 1]
    if words[0] == "INSERT":
        return "INSERT " + words[2]
    if words[0] == "WITH":
        writes = _writes_of(statement)
        if len({verb for verb, _ in writes}) == 1:
            return f"{writes[0][0]} " + " + ".join(table for _, table in writes)
        return " + ".join(f"{verb} {table}" for verb, table in writes)
    return " ".join(words[:2])  # COMMIT, a line of its own


def _writes_of(statement: str) -> list[tuple[str, str]]:
    """The writes of a statement of data-modifying WITH clauses (PostgreSQL), in their order:
    ``[("INSERT", "BROWSER_SESSIONS"), ("UPDATE", "LOGIN_LINKS")]``. INSERT INTO table, DELETE
    FROM table: the table follows by two; UPDATE table by one (an upsert's DO UPDATE names
    none)."""
    words = statement.split()
    return [
        (verb, words[i + (1 if verb == "UPDATE" else 2)])
        for i, word in enumerate(words)
        if (verb := word.lstrip("(")) in ("INSERT", "DELETE", "UPDATE") and words[i - 1] != "DO"
    ]


def _together(app: Flask) -> bool:
    """Whether the app's database takes a code's or a token's inserts in one statement
    (PostgreSQL's data-modifying WITH, idp.thin_statements ``inserts_together``)."""
    with app.app_context():
        return bool(db.engine.dialect.name == "postgresql")


def test_a_passkey_sign_in_through_the_code_flow_and_its_statements(storage_app: Flask) -> None:
    """The whole sign-in a relying party starts (docs/architecture.md, "A passkey sign-in, step
    by step"): three requests, since the authorization endpoint answers with the sign-in page,
    the page carries the passkey request options and the verify answers with the redirect URI
    and the code; each request's statements, pinned, with the rules among them: showing the page
    reads its client and writes nothing (the page carries the request and its passkey
    challenge, both signed), the challenge is spent by one conditional INSERT, the sign-in and
    the code are audited in the same transaction, and the request the page carried is stored
    spent by one conditional INSERT (idp.services.carried_requests)."""
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    assert pages.add_passkey(authenticator).status_code == 201
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))

    with statements(storage_app, commits=True) as sent:
        page = rp.authorize()
    assert page.status_code == 200  # the sign-in page itself
    # No write transaction: the request and the passkey options travel signed in the page, the
    # policy is this node's cached copy.
    assert [_first_words(s) for s in sent] == ["SELECT CLIENTS"]

    ceremony, csrf = page_options(page.text), csrf_meta(page.text)
    body = {"challenge_id": ceremony["challenge_id"], "next": "",
            "credential": authenticator.get(ceremony["publicKey"]),
            "request": shown_pending_id(page.text)}  # fmt: skip
    with statements(storage_app) as sent:
        verified = rp.browser.post("/login/passkey/verify", json=body,
                                   headers={"X-CSRFToken": csrf})  # fmt: skip
    assert verified.status_code == 200, verified.text
    # The grant, the code, login.passkey (held: idp.services.audit.hold) and
    # authorization.code_issued: one statement on PostgreSQL (its data-modifying WITH), one per
    # table on SQLite, the two events always in one.
    stored = (
        ["INSERT GRANTS + AUTHORIZATION_CODES + AUDIT_EVENTS"]
        if _together(storage_app)
        else ["INSERT GRANTS", "INSERT AUTHORIZATION_CODES", "INSERT AUDIT_EVENTS"]
    )
    # The owner's passkey: their second factors' failures and locks go (NIST SP 800-63B 5.2.2;
    # idp.services.sign_in ``owner_proved``): one statement on PostgreSQL (its data-modifying
    # WITH, idp.services.factor_locks ``clear_and_lift_statement``), one DELETE each on
    # SQLite.
    cleared = (
        ["DELETE ATTEMPT_COUNTERS + FACTOR_LOCKS"]
        if _together(storage_app)
        else ["DELETE FROM", "DELETE FROM"]
    )
    # The session, and the end of the user's unspent rescue links with a full sign-in: one
    # statement on PostgreSQL (idp.services.sessions ``_insert_ending_rescue_links``).
    started = (
        ["INSERT BROWSER_SESSIONS + UPDATE LOGIN_LINKS"]
        if _together(storage_app)
        else ["INSERT BROWSER_SESSIONS", "UPDATE LOGIN_LINKS"]
    )
    assert [_first_words(s) for s in sent] == [
        "SELECT PASSKEYS",  # with its owner, by one Core SELECT (idp.services.passkey_records)
        "INSERT WEBAUTHN_CHALLENGES",  # the spend, once the answer verified
        "UPDATE PASSKEYS",  # counter, backup state and last use, sent as the checks pass
        *cleared,
        "SELECT CLIENTS",  # the carried request's client, read once for the whole request
        *started,
        "INSERT PENDING_AUTHORIZATIONS",  # the carried request, stored spent: its spend
        *stored,
    ]
    assert "ON CONFLICT" in sent[1]
    assert "RETURNING" in sent[1]
    assert "ATTEMPT_COUNTERS" in sent[3]
    assert "FACTOR_LOCKS" in sent[2 + len(cleared)]
    spent = sent[4 + len(cleared) + len(started)]
    assert "ON CONFLICT" in spent
    assert "RETURNING" in spent
    callback = verified.get_json()["redirect"]
    assert callback.startswith(rp.registered.redirect_uri + "?")
    with storage_app.app_context():
        audited = db.session.scalars(
            select(AuditEvent.kind).where(AuditEvent.subject_id == user.id)
        ).all()
    assert {"login.passkey", "authorization.code_issued"} <= set(audited)

    assert rp.browser.get("/jwks").status_code == 200  # this process's key cache, loaded
    with statements(storage_app) as sent:
        exchanged = rp.exchange(query_of(callback)["code"])
    assert exchanged.status_code == 200, exchanged.text
    # The code is spent and read in one conditional UPDATE ... RETURNING (its grant's sign-in and
    # its user's claims by subqueries: GrantService.redeem_code), not a SELECT and an UPDATE.
    tokens = (
        ["INSERT ACCESS_TOKENS + REFRESH_TOKENS"]
        if _together(storage_app)
        else ["INSERT ACCESS_TOKENS", "INSERT REFRESH_TOKENS"]
    )
    assert [_first_words(s) for s in sent] == [
        "SELECT CLIENTS", "UPDATE AUTHORIZATION_CODES", *tokens,
    ]  # fmt: skip
    assert "CONSUMED_AT IS NULL" in sent[1]
    assert "RETURNING" in sent[1]


def test_a_held_audit_row_goes_with_the_next_write_or_the_commit_and_not_after_a_rollback(
    storage_app: Flask,
) -> None:
    """``audit.hold`` (a passkey sign-in's row): sent by the transaction's next ``write`` in the
    same statement, else just before its commit; a rollback drops it with the transaction."""
    with storage_app.app_context():
        session = db.session()
        with statements(storage_app, commits=True) as sent:
            audit.hold(session, "login.passkey", subject_id="u1")
            audit.write(session, "authorization.code_issued", subject_id="u1")
            session.commit()
        assert [_first_words(s) for s in sent] == ["INSERT AUDIT_EVENTS", "COMMIT"]
        with statements(storage_app, commits=True) as sent:
            audit.hold(session, "login.passkey", subject_id="u2")
            session.commit()
        assert [_first_words(s) for s in sent] == ["INSERT AUDIT_EVENTS", "COMMIT"]
        audit.hold(session, "login.passkey", subject_id="u3")
        session.rollback()
        session.commit()
        kinds = session.execute(
            select(AuditEvent.subject_id, AuditEvent.kind).order_by(AuditEvent.id)
        ).all()
    assert [tuple(row) for row in kinds] == [
        ("u1", "login.passkey"), ("u1", "authorization.code_issued"), ("u2", "login.passkey"),
    ]  # fmt: skip
