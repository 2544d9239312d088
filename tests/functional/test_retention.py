"""Pruning (idp.services.retention, ``idp prune``, and the nodes' opportunistic prune): expired
rows of every short-lived table go, live ones and replay evidence stay, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, insert, select, update
from sqlalchemy.orm import Session

from idp import create_app
from idp.cli import main
from idp.clock import KEPT_PAST_EXPIRY
from idp.extensions import db
from idp.models import (
    AccessToken,
    AttemptCounter,
    AuditEvent,
    AuthorizationCode,
    BrowserSession,
    DeviceAuthorization,
    EmailChangeRequest,
    FactorLock,
    Grant,
    LoginLink,
    MaintenanceRun,
    OutboxMessage,
    PartialLogin,
    PendingAuthorization,
    PushedAuthorizationRequest,
    RefreshToken,
    SignupLink,
    UsedClientAssertion,
    UsedDPoPProof,
    WebAuthnChallenge,
)
from idp.models.base import utcnow
from idp.services.retention import (
    BATCH_SIZE,
    CATCH_UP_INTERVAL,
    OPPORTUNISTIC_BATCHES,
    RULES,
    UNREDEEMED_GRANTS,
    PruneSchedule,
    RetentionPolicy,
    claim_run,
    prune,
)
from tests.conftest import app_overrides
from tests.support.cli import initialised_cli
from tests.support.factories import create_client, create_user

NOW = utcnow()
DAY = timedelta(days=1)
REFRESH_TTL = 30 * 24 * 3600
IDLE_TTL = 14 * 24 * 3600


def policy(now: datetime = NOW, retention_days: int = 365) -> RetentionPolicy:
    return RetentionPolicy(now=now, audit_retention_days=retention_days,
                           session_idle_ttl=IDLE_TTL, refresh_token_ttl=REFRESH_TTL)  # fmt: skip


class Seeder:
    """Rows of every short-lived table, each named ``live-...`` or ``dead-...``."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.user_id = create_user(app, email="ada@example.com").id
        self.client_id = create_client(app).client_id
        self.grants: dict[str, str] = {}

    def add(self, *rows: Any) -> None:
        with self.app.app_context():
            for row in rows:
                db.session.add(row)
            db.session.commit()

    def grant(self, name: str, revoked_at: datetime | None = None) -> str:
        row = Grant(id=name, user_id=self.user_id, client_id=self.client_id, scope="openid",
                    auth_time=NOW, amr=["pwd"], acr="urn:idp:acr:password",
                    revoked_at=revoked_at)  # fmt: skip
        self.add(row)
        return name

    def challenge(self, name: str, expires: datetime, consumed: bool = False) -> WebAuthnChallenge:
        return WebAuthnChallenge(id=name, kind="authentication", challenge="c" * 43,
                                 binding_hash="b" * 64, expires_at=expires,
                                 consumed_at=NOW if consumed else None)  # fmt: skip

    def pending(self, name: str, expires: datetime) -> PendingAuthorization:
        return PendingAuthorization(id=name, client_id=self.client_id, params={},
                                    expires_at=expires)  # fmt: skip

    def pushed(self, name: str, expires: datetime) -> PushedAuthorizationRequest:
        return PushedAuthorizationRequest(secret_hash=name, client_id=self.client_id, params={},
                                          expires_at=expires)  # fmt: skip

    def partial(self, name: str, expires: datetime) -> PartialLogin:
        return PartialLogin(id_hash=name, user_id=self.user_id, amr=["pwd"], expires_at=expires)

    def code(self, name: str, grant_id: str, expires: datetime) -> AuthorizationCode:
        return AuthorizationCode(code_hash=name, grant_id=grant_id, client_id=self.client_id,
                                 redirect_uri="https://rp.example/cb", scope="openid",
                                 expires_at=expires, consumed_at=NOW)  # fmt: skip

    def device(self, name: str, grant_id: str | None, expires: datetime) -> DeviceAuthorization:
        return DeviceAuthorization(id=name, device_code_hash=name, user_code_hash=name,
                                   client_id=self.client_id, scope="openid", interval=5,
                                   grant_id=grant_id, expires_at=expires)  # fmt: skip

    def access(self, name: str, grant_id: str | None, expires: datetime) -> AccessToken:
        return AccessToken(jti=name, grant_id=grant_id, client_id=self.client_id, scope="openid",
                           expires_at=expires)  # fmt: skip

    def refresh(
        self, name: str, grant_id: str, expires: datetime, consumed: bool = False
    ) -> RefreshToken:
        return RefreshToken(token_hash=name, grant_id=grant_id, client_id=self.client_id,
                            scope="openid", expires_at=expires,
                            consumed_at=NOW if consumed else None)  # fmt: skip

    def link(self, name: str, expires: datetime) -> LoginLink:
        return LoginLink(id_hash=name, user_id=self.user_id, expires_at=expires)

    def session(
        self, name: str, *, expires: datetime, last_seen: datetime = NOW,
        revoked: datetime | None = None,
    ) -> BrowserSession:  # fmt: skip
        return BrowserSession(id_hash=name, sid=name[:32], user_id=self.user_id, auth_time=NOW,
                              amr=["pwd"], acr="urn:idp:acr:password", created_at=NOW - DAY,
                              last_seen_at=last_seen, expires_at=expires,
                              revoked_at=revoked)  # fmt: skip

    def email_change(self, name: str, expires: datetime) -> EmailChangeRequest:
        return EmailChangeRequest(id_hash=name, user_id=self.user_id, old_email="ada@example.com",
                                  new_email="ada@new.example", expires_at=expires)  # fmt: skip

    def outbox(self, name: str, created: datetime, sent: datetime | None) -> OutboxMessage:
        return OutboxMessage(recipient="ada@example.com", kind=name, subject=name, body="",
                             created_at=created, sent_at=sent)  # fmt: skip


def remaining(app: Flask) -> dict[str, set[str]]:
    """The surviving rows' names per table (``live-...`` / ``dead-...``)."""
    keys = {
        "webauthn_challenges": WebAuthnChallenge.id,
        "pending_authorizations": PendingAuthorization.id,
        "pushed_authorization_requests": PushedAuthorizationRequest.secret_hash,
        "partial_logins": PartialLogin.id_hash,
        "authorization_codes": AuthorizationCode.code_hash,
        "device_authorizations": DeviceAuthorization.id,
        "access_tokens": AccessToken.jti,
        "refresh_tokens": RefreshToken.token_hash,
        "grants": Grant.id,
        "used_client_assertions": UsedClientAssertion.jti_hash,
        "used_dpop_proofs": UsedDPoPProof.jti_hash,
        "login_links": LoginLink.id_hash,
        "signup_links": SignupLink.id_hash,
        "email_change_requests": EmailChangeRequest.id_hash,
        "browser_sessions": BrowserSession.id_hash,
        "attempt_counters": AttemptCounter.key,
        "factor_locks": FactorLock.key,
        "outbox_messages": OutboxMessage.kind,
        "audit_events": AuditEvent.kind,
    }
    assert set(keys) == {rule.table for rule in RULES}, "a new rule needs a row here"
    with app.app_context():
        found = {table: set(db.session.scalars(select(key))) for table, key in keys.items()}
    # The factories' own audit events (a client was created) are not part of the seed.
    found["audit_events"] = {k for k in found["audit_events"] if k.startswith(("live-", "dead-"))}
    return found


@pytest.fixture
def seeded(storage_app: Flask) -> Seeder:
    s = Seeder(storage_app)
    ago = lambda delta: NOW - delta  # noqa: E731
    later = lambda delta: NOW + delta  # noqa: E731
    live_grant = s.grant("live-grant")
    s.grant("live-revoked-recently", revoked_at=ago(DAY))
    s.grant("dead-revoked-long-ago", revoked_at=ago(timedelta(seconds=REFRESH_TTL) + DAY))
    # A grant revoked long ago that still holds an unexpired refresh token stays with it.
    s.grant("live-revoked-with-token", revoked_at=ago(timedelta(seconds=REFRESH_TTL) + DAY))
    minute = timedelta(minutes=1)
    s.add(
        s.challenge("live-challenge", later(minute)),
        s.challenge("dead-challenge", ago(minute)),
        s.challenge("dead-spent-challenge", ago(minute), consumed=True),
        s.pending("live-pending", later(minute)),
        # Kept a while past its expiry (idp.services.carried_requests: its request may still be
        # taken by a node whose clock reads behind this one's).
        s.pending("live-pending-just-expired", ago(minute)),
        s.pending("dead-pending", ago(KEPT_PAST_EXPIRY + minute)),
        s.pushed("live-pushed", later(minute)),
        s.pushed("dead-pushed", ago(minute)),
        s.partial("live-partial", later(minute)),
        s.partial("dead-partial", ago(minute)),
        # A spent code stays a day past its expiry: a late replay still revokes its grant.
        s.code("live-code-just-expired", live_grant, ago(timedelta(hours=1))),
        s.code("dead-code", live_grant, ago(2 * DAY)),
        # A spent device code stays as long: its replay revokes the grant too.
        s.device("live-device-just-expired", live_grant, ago(timedelta(hours=1))),
        s.device("dead-device", None, ago(2 * DAY)),
        s.access("live-access", live_grant, later(minute)),
        s.access("dead-access", live_grant, ago(minute)),
        s.access("dead-access-client-credentials", None, ago(minute)),
        # A consumed refresh token stays until it expires, so its replay is still caught.
        s.refresh("live-refresh-consumed", live_grant, later(DAY), consumed=True),
        s.refresh("dead-refresh", live_grant, ago(minute)),
        s.refresh("live-refresh-of-old-grant", "live-revoked-with-token", later(DAY)),
        # Authlib accepts an assertion 60 s past exp: its jti must stay well beyond that.
        UsedClientAssertion(jti_hash="live-assertion-in-leeway", expires_at=ago(2 * minute)),
        UsedClientAssertion(jti_hash="dead-assertion", expires_at=ago(2 * timedelta(hours=1))),
        # A proof is remembered while its iat is in the window (idp.services.dpop), no longer.
        UsedDPoPProof(jti_hash="live-dpop-proof", expires_at=later(minute)),
        UsedDPoPProof(jti_hash="dead-dpop-proof", expires_at=ago(minute)),
        s.link("live-link-recently-expired", ago(DAY)),
        s.link("dead-link", ago(8 * DAY)),
        SignupLink(id_hash="live-signup", email="new@example.com", expires_at=later(minute)),
        SignupLink(id_hash="dead-signup", email="new@example.com", expires_at=ago(minute)),
        s.email_change("live-email-change", later(minute)),
        s.email_change("dead-email-change", ago(minute)),
        s.session("live-session", expires=later(DAY)),
        s.session("dead-session-expired", expires=ago(minute)),
        s.session(
            "dead-session-idle",
            expires=later(DAY),
            last_seen=ago(timedelta(seconds=IDLE_TTL) + minute),
        ),
        s.session("dead-session-revoked", expires=later(DAY), revoked=ago(minute)),
        AttemptCounter(key="pwd:live-locked-account", failures=100, last_failure_at=ago(2 * DAY)),
        AttemptCounter(key="pwd:dead-forgotten", failures=3, last_failure_at=ago(31 * DAY)),
        # A fixed window's counter (its window ended at most an hour after its last count).
        AttemptCounter(key="win:addr:live-address", failures=9, last_failure_at=ago(minute)),
        AttemptCounter(
            key="win:addr:dead-address", failures=9, last_failure_at=ago(2 * minute * 60)
        ),
        # A lock lasts until an admin unlocks it or 30 days pass.
        FactorLock(key="live-lock", locked_at=ago(29 * DAY)),
        FactorLock(key="dead-lock", locked_at=ago(31 * DAY)),
        s.outbox("live-outbox-sent", ago(DAY), ago(DAY)),
        s.outbox("dead-outbox-sent", ago(40 * DAY), ago(31 * DAY)),
        s.outbox("live-outbox-unsent", ago(40 * DAY), None),
        s.outbox("dead-outbox-unsent", ago(400 * DAY), None),
        AuditEvent(kind="live-audit", at=ago(364 * DAY)),
        AuditEvent(kind="dead-audit", at=ago(366 * DAY)),
    )
    return s


def test_prune_deletes_the_expired_rows_of_every_table_and_keeps_the_live_ones(
    storage_app: Flask, seeded: Seeder
) -> None:
    with storage_app.app_context():
        counts = prune(db.session(), policy(), batch_size=2)  # several batches per table
    left = remaining(storage_app)
    dead = {table: {n for n in names if n.startswith("dead-")} for table, names in left.items()}
    assert dead == {table: set() for table in left}
    assert left == {
        "webauthn_challenges": {"live-challenge"},
        "pending_authorizations": {"live-pending", "live-pending-just-expired"},
        "pushed_authorization_requests": {"live-pushed"},
        "partial_logins": {"live-partial"},
        "authorization_codes": {"live-code-just-expired"},
        "device_authorizations": {"live-device-just-expired"},
        "access_tokens": {"live-access"},
        "refresh_tokens": {"live-refresh-consumed", "live-refresh-of-old-grant"},
        "grants": {"live-grant", "live-revoked-recently", "live-revoked-with-token"},
        "used_client_assertions": {"live-assertion-in-leeway"},
        "used_dpop_proofs": {"live-dpop-proof"},
        "login_links": {"live-link-recently-expired"},
        "signup_links": {"live-signup"},
        "email_change_requests": {"live-email-change"},
        "browser_sessions": {"live-session"},
        "attempt_counters": {"pwd:live-locked-account", "win:addr:live-address"},
        "factor_locks": {"live-lock"},
        "outbox_messages": {"live-outbox-sent", "live-outbox-unsent"},
        "audit_events": {"live-audit"},
    }
    assert counts == {
        "webauthn_challenges": 2, "pending_authorizations": 1,
        "pushed_authorization_requests": 1, "partial_logins": 1,
        "authorization_codes": 1, "device_authorizations": 1, "access_tokens": 2,
        "refresh_tokens": 1, "grants": 1, "used_client_assertions": 1, "used_dpop_proofs": 1,
        "login_links": 1,
        "signup_links": 1,
        "email_change_requests": 1, "browser_sessions": 3, "attempt_counters": 2,
        "factor_locks": 1, "outbox_messages": 2, "audit_events": 1,
        # Every seeded grant issued a token or was revoked: none is taken back.
        UNREDEEMED_GRANTS: 0,
    }  # fmt: skip
    with storage_app.app_context():
        again = prune(db.session(), policy())
    assert set(again.values()) == {0}


def test_a_retention_of_zero_days_keeps_audit_events_forever(
    storage_app: Flask, seeded: Seeder
) -> None:
    with storage_app.app_context():
        counts = prune(db.session(), policy(retention_days=0))
    assert counts["audit_events"] == 0
    assert remaining(storage_app)["audit_events"] == {"live-audit", "dead-audit"}
    assert "dead-outbox-unsent" in remaining(storage_app)["outbox_messages"]


def test_a_bounded_prune_leaves_the_rest_for_the_next_run(
    storage_app: Flask, seeded: Seeder
) -> None:
    with storage_app.app_context():
        first = prune(db.session(), policy(), batch_size=1, max_batches=1)
    assert first["browser_sessions"] == 1
    with storage_app.app_context():
        second = prune(db.session(), policy())
    assert second["browser_sessions"] == 2


def test_a_pruned_session_cookie_no_longer_signs_anyone_in(storage_app: Flask) -> None:
    """The real path: a sign-in, its session expired and pruned, the cookie then opens nothing
    and prune left the live session of another browser alone."""
    from tests.support.flow import start_session

    user = create_user(storage_app, email="ada@example.com")
    old, fresh = storage_app.test_client(), storage_app.test_client()
    start_session(old, user)
    start_session(fresh, user)
    with storage_app.app_context():
        oldest = min(db.session.scalars(select(BrowserSession)), key=lambda s: s.created_at)
        db.session.execute(update(BrowserSession).where(BrowserSession.id_hash == oldest.id_hash)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))  # fmt: skip
        db.session.commit()
        counts = prune(db.session(), policy(now=utcnow()))
    assert counts["browser_sessions"] == 1
    assert old.get("/account").status_code == 302
    assert fresh.get("/account").status_code == 200


# -- the command line ------------------------------------------------------------------------------
def test_cli_prune_prints_the_counts(tmp_path: Path) -> None:
    runner = initialised_cli(tmp_path, IDP_AUDIT_RETENTION_DAYS="30")
    url = runner.env["IDP_DATABASE_URL"]
    engine = create_engine(url)
    with Session(engine) as session:
        session.add_all([
            WebAuthnChallenge(kind="authentication", challenge="c", binding_hash="b",
                              expires_at=NOW - DAY),
            WebAuthnChallenge(kind="authentication", challenge="c", binding_hash="b",
                              expires_at=NOW + DAY),
            AuditEvent(kind="old", at=NOW - 31 * DAY),
            AuditEvent(kind="recent", at=NOW - 29 * DAY),
        ])  # fmt: skip
        session.commit()
    result = runner.invoke(main, ["prune", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["webauthn_challenges"] == 1
    assert counts["audit_events"] == 1
    assert set(counts) == {rule.table for rule in RULES} | {UNREDEEMED_GRANTS}
    with Session(engine) as session:
        kinds = set(session.scalars(select(AuditEvent.kind)))
        assert "recent" in kinds
        assert "old" not in kinds
        # The nodes need not prune again right away.
        assert session.get(MaintenanceRun, "prune") is not None
    engine.dispose()
    text = runner.invoke(main, ["prune"])
    assert "webauthn_challenges" in text.output


# -- opportunistic pruning -------------------------------------------------------------------------
def test_the_schedule_says_due_once_per_interval() -> None:
    now = [1000.0]
    schedule = PruneSchedule(600, clock=lambda: now[0])
    assert schedule.due()  # a fresh node tries after its first request
    assert not schedule.due()
    now[0] += 599
    assert not schedule.due()
    now[0] += 1
    assert schedule.due()
    assert not PruneSchedule(0).due()  # 0: only ``idp prune``


def test_claiming_a_run_is_won_by_exactly_one_of_many_parallel_nodes(storage_app: Flask) -> None:
    with storage_app.app_context():
        engine = db.engine
    results: list[bool] = []
    start = threading.Barrier(8)
    now = utcnow()

    def node() -> None:
        with Session(engine) as session:
            start.wait()
            results.append(claim_run(session, now, timedelta(minutes=10)))

    threads = [threading.Thread(target=node) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    with Session(engine) as session:
        assert not claim_run(session, now + timedelta(minutes=9), timedelta(minutes=10))
        assert claim_run(session, now + timedelta(minutes=10), timedelta(minutes=10))


def _node(storage_app: Flask, tmp_path: Path, name: str) -> Flask:
    url = storage_app.config["SQLALCHEMY_DATABASE_URI"]
    return create_app(app_overrides(url, tmp_path / name, prune_interval=600))


def _expired_challenge(app: Flask, name: str) -> Callable[[], bool]:
    with app.app_context():
        db.session.add(WebAuthnChallenge(id=name, kind="authentication", challenge="c",
                                         binding_hash="b", expires_at=utcnow() - DAY))  # fmt: skip
        db.session.commit()

    def still_there() -> bool:
        with app.app_context():
            return db.session.get(WebAuthnChallenge, name) is not None

    return still_there


def test_a_node_prunes_after_a_response_once_per_interval_and_one_node_per_interval(
    storage_app: Flask, tmp_path: Path
) -> None:
    node_a = _node(storage_app, tmp_path, "a")
    first = _expired_challenge(storage_app, "first")
    response = node_a.test_client().get("/login")
    assert response.status_code == 200
    response.close()  # a WSGI server closes the response once it is sent; the prune runs then
    assert not first()
    # The same node within the interval: no claim, no prune (no query either).
    second = _expired_challenge(storage_app, "second")
    node_a.test_client().get("/login").close()
    assert second()
    # Another node within the interval tries, but the claim is taken: it leaves the row.
    node_b = _node(storage_app, tmp_path, "b")
    node_b.test_client().get("/login").close()
    assert second()
    # Once the interval has passed, a node that asks wins the claim and prunes.
    with storage_app.app_context():
        db.session.execute(update(MaintenanceRun).values(last_run_at=utcnow() - timedelta(
            seconds=601)))  # fmt: skip
        db.session.commit()
    _node(storage_app, tmp_path, "c").test_client().get("/login").close()
    assert not second()


def test_a_prune_cut_short_by_its_batch_limit_catches_up_soon(
    storage_app: Flask, tmp_path: Path
) -> None:
    """docs/operations.md, "Storage budgets": a backlog larger than one bounded run is worked off
    every CATCH_UP_INTERVAL, not once per prune_interval, so pruning keeps pace with the worst
    rate the budgets allow."""
    backlog = OPPORTUNISTIC_BATCHES * BATCH_SIZE + 1
    with storage_app.app_context():
        db.session.execute(insert(WebAuthnChallenge), [
            {"id": f"dead-{n}", "kind": "authentication", "challenge": "c", "binding_hash": "b",
             "expires_at": utcnow() - DAY} for n in range(backlog)
        ])  # fmt: skip
        db.session.commit()
    node = _node(storage_app, tmp_path, "a")
    now = [1000.0]
    node.extensions["idp"].prune_schedule = PruneSchedule(600, clock=lambda: now[0])

    def left() -> int:
        with storage_app.app_context():
            return len(db.session.scalars(select(WebAuthnChallenge.id)).all())

    node.test_client().get("/login").close()
    assert left() == 1  # one bounded run: the batch limit
    # The maintenance claim is taken for CATCH_UP_INTERVAL, not for the whole prune_interval.
    with storage_app.app_context():
        db.session.execute(update(MaintenanceRun).values(
            last_run_at=utcnow() - CATCH_UP_INTERVAL - timedelta(seconds=1)))  # fmt: skip
        db.session.commit()
    now[0] += CATCH_UP_INTERVAL.total_seconds()
    node.test_client().get("/login").close()
    assert left() == 0
    # Caught up: back to one run per prune_interval.
    _expired_challenge(storage_app, "after")
    now[0] += CATCH_UP_INTERVAL.total_seconds()
    node.test_client().get("/login").close()
    assert left() == 1


def test_an_opportunistic_prune_that_fails_never_fails_the_request(
    storage_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> dict[str, int]:
        raise RuntimeError("database went away")

    monkeypatch.setattr("idp.web.background.prune", broken)
    response = _node(storage_app, tmp_path, "a").test_client().get("/login")
    assert response.status_code == 200
    response.close()


@pytest.mark.parametrize("storage", ["sqlite", "postgresql"])
def test_a_production_server_prunes_on_its_own(tmp_path: Path, storage: str) -> None:
    """``idp serve --production`` (several workers, the default WSGI server): with no ``idp
    prune`` ever run, an expired row goes after ordinary requests, a live one stays."""
    import contextlib

    import requests

    from tests.support.apps import live_on
    from tests.support.events import EVENT_DEADLINE

    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(
            live_on(storage, tmp_path, production=True, env={"IDP_PRUNE_INTERVAL": "1"})
        )
        engine = create_engine(idp.env["IDP_DATABASE_URL"])
        stack.callback(engine.dispose)
        with Session(engine) as session:
            session.add_all([
                WebAuthnChallenge(id="dead-challenge", kind="authentication", challenge="c",
                                  binding_hash="b", expires_at=utcnow() - DAY),
                WebAuthnChallenge(id="live-challenge", kind="authentication", challenge="c",
                                  binding_hash="b", expires_at=utcnow() + DAY),
            ])  # fmt: skip
            session.commit()

        def ids() -> set[str]:
            with Session(engine) as session:
                return set(session.scalars(select(WebAuthnChallenge.id)))

        deadline = time.monotonic() + EVENT_DEADLINE
        while "dead-challenge" in ids():
            assert time.monotonic() < deadline, idp.log_tail()
            assert requests.get(idp.url + "/login", timeout=10).status_code == 200
            time.sleep(0.3)
        assert ids() == {"live-challenge"}
