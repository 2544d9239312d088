"""Pruning: delete the rows of short-lived tables once they can no longer matter, and audit events
older than the retention (``audit_retention_days``): nothing grows without bound.

Each rule says when a row is dead, with a margin wherever a spent row is still evidence: a spent
code or client assertion must outlive every moment it could be replayed, or a replay would no
longer be recognised (RFC 6749 4.1.2, RFC 7523 3). Rows go in small batches, each committed, so
that a large backlog never holds a long lock on a live table.

``idp prune`` runs every rule to the end. Nodes also prune opportunistically (``PruneSchedule``):
after a response is sent, at most once per ``prune_interval`` per node (a clock comparison in
memory, no query, on every other request), and among all the nodes sharing the database only the
one that wins an atomic claim on the ``maintenance_runs`` row does the work; it deletes a bounded
number of batches and leaves the rest to the next interval. So a deployment that never calls the
CLI stays bounded, many nodes do not prune in parallel, and no request waits for it.

The same job retries the outbox's undelivered mail with backoff and drops expired one-time secrets
from stored message bodies (idp.services.notifications), and takes back the grants that never
issued a token and never will (``take_back_unredeemed``), which would otherwise stay live.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from idp.clock import KEPT_PAST_EXPIRY, STAMPED_AHEAD_TOLERANCE
from idp.interval_gate import IntervalGate
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
from idp.services.notifications import drop_expired_secrets
from idp.services.outbox import Channel, deliver_due
from idp.services.rate_limits import COUNTER_LIFETIME, MAX_WINDOW, WINDOW_PREFIX

#: A spent code stays a day after it expired, so a late replay still revokes its grant
#: (RFC 6749 4.1.2: "SHOULD revoke ... all tokens previously issued based on that code").
CODE_REPLAY_EVIDENCE = timedelta(days=1)
#: Authlib accepts a client assertion up to 60 s past its ``exp`` (leeway); its ``jti`` must stay
#: recorded well beyond that, or the assertion could be replayed once (RFC 7523 3, "jti").
ASSERTION_REPLAY_EVIDENCE = timedelta(hours=1)
#: Used, revoked and expired login links stay listed for admins this long.
LOGIN_LINK_HISTORY = timedelta(days=7)
#: Notifications already delivered by SMTP stay this long.
SENT_MESSAGE_HISTORY = timedelta(days=30)

BATCH_SIZE = 1000
#: The opportunistic prune deletes at most this many batches per table and run.
OPPORTUNISTIC_BATCHES = 5
#: A run that reached its batch limit left dead rows behind: the node that ran it tries again
#: this soon rather than a whole ``prune_interval`` later, so that pruning keeps pace with the
#: worst rate the storage budgets allow (docs/operations.md, "Storage budgets").
CATCH_UP_INTERVAL = timedelta(seconds=10)
JOB_NAME = "prune"


@dataclass(frozen=True)
class RetentionPolicy:
    now: datetime
    #: 0 keeps audit events (and unsent outbox messages) forever.
    audit_retention_days: int
    session_idle_ttl: int
    refresh_token_ttl: int


@dataclass(frozen=True)
class Rule:
    table: str
    key: InstrumentedAttribute[Any]
    dead: Callable[[RetentionPolicy], ColumnElement[bool] | None]


def _grant_is_empty() -> ColumnElement[bool]:
    return and_(
        ~exists().where(AuthorizationCode.grant_id == Grant.id),
        ~exists().where(DeviceAuthorization.grant_id == Grant.id),
        ~exists().where(AccessToken.grant_id == Grant.id),
        ~exists().where(RefreshToken.grant_id == Grant.id),
    )


#: Why pruning revoked a grant: its code or device approval expired unredeemed.
UNREDEEMED = "unredeemed"
#: How many grants a prune run took back (``take_back_unredeemed``), among its counts.
UNREDEEMED_GRANTS = "unredeemed_grants"


def _unredeemed(cutoff: datetime) -> ColumnElement[bool]:
    """A live grant that never issued a token and never will: it has a code or a device approval,
    every one unspent and expired before ``cutoff``, and no access or refresh token."""
    codes, devices = AuthorizationCode, DeviceAuthorization
    return and_(
        Grant.revoked_at.is_(None),
        or_(
            Grant.id.in_(select(codes.grant_id).where(
                codes.consumed_at.is_(None), codes.expires_at < cutoff)),
            Grant.id.in_(select(devices.grant_id).where(
                devices.consumed_at.is_(None), devices.expires_at < cutoff)),
        ),
        ~exists().where(codes.grant_id == Grant.id,
                        or_(codes.consumed_at.is_not(None), codes.expires_at >= cutoff)),
        ~exists().where(devices.grant_id == Grant.id,
                        or_(devices.consumed_at.is_not(None), devices.expires_at >= cutoff)),
        ~exists().where(AccessToken.grant_id == Grant.id),
        ~exists().where(RefreshToken.grant_id == Grant.id),
    )  # fmt: skip


def _older_than_days(column: Any, p: RetentionPolicy) -> ColumnElement[bool] | None:
    if p.audit_retention_days <= 0:
        return None
    return column < p.now - timedelta(days=p.audit_retention_days)


def _outbox_dead(p: RetentionPolicy) -> ColumnElement[bool]:
    """Delivered messages after a month; undelivered ones (no SMTP: the outbox is their only
    record) as long as the audit log."""
    sent = OutboxMessage.sent_at < p.now - SENT_MESSAGE_HISTORY
    unsent_old = _older_than_days(OutboxMessage.created_at, p)
    if unsent_old is None:
        return sent
    return or_(sent, and_(OutboxMessage.sent_at.is_(None), unsent_old))


#: Children before parents (tokens before their grant).
RULES: tuple[Rule, ...] = (
    Rule("webauthn_challenges", WebAuthnChallenge.id,
         lambda p: WebAuthnChallenge.expires_at < p.now),
    # A carried request's row outlives the request a little, so that a node whose clock reads
    # ahead prunes no row another node still relies on (idp.services.carried_requests).
    Rule("pending_authorizations", PendingAuthorization.id,
         lambda p: PendingAuthorization.expires_at < p.now - KEPT_PAST_EXPIRY),
    # RFC 9126 4: an expired request_uri is refused; its row is kept no longer.
    Rule("pushed_authorization_requests", PushedAuthorizationRequest.secret_hash,
         lambda p: PushedAuthorizationRequest.expires_at < p.now),
    Rule("partial_logins", PartialLogin.id_hash, lambda p: PartialLogin.expires_at < p.now),
    Rule("authorization_codes", AuthorizationCode.code_hash,
         lambda p: AuthorizationCode.expires_at < p.now - CODE_REPLAY_EVIDENCE),
    # A spent device code is kept as long as a spent authorization code: its replay revokes the
    # grant (idp.services.device).
    Rule("device_authorizations", DeviceAuthorization.id,
         lambda p: DeviceAuthorization.expires_at < p.now - CODE_REPLAY_EVIDENCE),
    # An expired token is refused by its own lifetime; a consumed refresh token stays until then,
    # so that its replay is still recognised and revokes the family (RFC 9700 4.14.2).
    Rule("access_tokens", AccessToken.jti, lambda p: AccessToken.expires_at < p.now),
    Rule("refresh_tokens", RefreshToken.token_hash, lambda p: RefreshToken.expires_at < p.now),
    # A revoked grant whose every token has lived out its lifetime is history (the audit log
    # keeps it); a live grant stays, whether or not it holds tokens now.
    Rule("grants", Grant.id, lambda p: and_(
        Grant.revoked_at < p.now - timedelta(seconds=p.refresh_token_ttl), _grant_is_empty())),
    Rule("used_client_assertions", UsedClientAssertion.jti_hash,
         lambda p: UsedClientAssertion.expires_at < p.now - ASSERTION_REPLAY_EVIDENCE),
    # RFC 9449 11.1: a proof's iat has left the accepted window, and the proof with it.
    Rule("used_dpop_proofs", UsedDPoPProof.jti_hash,
         lambda p: UsedDPoPProof.expires_at < p.now),
    Rule("login_links", LoginLink.id_hash,
         lambda p: LoginLink.expires_at < p.now - LOGIN_LINK_HISTORY),
    # A sign-up link names an email, not an account: once expired it proves nothing.
    Rule("signup_links", SignupLink.id_hash, lambda p: SignupLink.expires_at < p.now),
    # An expired email change cannot be confirmed, used or not; the audit log keeps its story.
    Rule("email_change_requests", EmailChangeRequest.id_hash,
         lambda p: EmailChangeRequest.expires_at < p.now),
    Rule("browser_sessions", BrowserSession.id_hash, lambda p: or_(
        BrowserSession.expires_at < p.now,
        BrowserSession.revoked_at < p.now,
        BrowserSession.last_seen_at < p.now - timedelta(seconds=p.session_idle_ttl))),
    # A fixed window's counter is done once its window ended (at most MAX_WINDOW after its last
    # count); per-account ones are forgotten after the lifetime Redis gives them, so both stores
    # forget alike.
    Rule("attempt_counters", AttemptCounter.key, lambda p: or_(
        AttemptCounter.last_failure_at.is_(None),
        and_(AttemptCounter.key.startswith(WINDOW_PREFIX),
             AttemptCounter.last_failure_at < p.now - MAX_WINDOW),
        AttemptCounter.last_failure_at < p.now - COUNTER_LIFETIME)),
    # a lock lasts until an admin unlocks it or 30 days pass.
    Rule("factor_locks", FactorLock.key,
         lambda p: FactorLock.locked_at < p.now - COUNTER_LIFETIME),
    Rule("outbox_messages", OutboxMessage.id, lambda p: _outbox_dead(p)),
    Rule("audit_events", AuditEvent.id, lambda p: _older_than_days(AuditEvent.at, p)),
)  # fmt: skip


def prune(
    db: Session,
    policy: RetentionPolicy,
    *,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
    channels: Sequence[Channel] = (),
) -> dict[str, int]:
    """Delete dead rows, table by table; returns how many went from each. Commits per batch.

    The outbox is tended first (idp.services.outbox): one-time secrets that expired leave the
    stored bodies, and the rows whose retry is due go out again through ``channels`` (mail when
    SMTP is configured, back-channel logout tokens; none: the caller sends them, as the
    opportunistic prune does on the delivery threads, idp.web.background)."""
    drop_expired_secrets(db, policy.now)
    deliver_due(db, channels, policy.now)
    # Before the rules: they delete the expired codes and approvals that show a grant never
    # issued anything, and without them it cannot be told from one whose tokens all expired.
    counts = {UNREDEEMED_GRANTS: take_back_unredeemed(db, policy.now, batch_size, max_batches)}
    for rule in RULES:
        condition = rule.dead(policy)
        counts[rule.table] = 0
        if condition is not None:
            counts[rule.table] = _in_batches(
                db, rule.key, condition, _deleting(rule.key), batch_size, max_batches
            )
    return counts


def _deleting(key: InstrumentedAttribute[Any]) -> Callable[[list[Any]], Any]:
    """The DELETE of a batch of ``key``'s rows."""
    return lambda keys: delete(key.class_).where(key.in_(keys))


def take_back_unredeemed(
    db: Session, now: datetime, batch_size: int = BATCH_SIZE, max_batches: int | None = None
) -> int:
    """Revoke the live grants that never issued a token and never will: their every code (RFC
    6749 4.1.2: at most ten minutes) or device approval (RFC 8628 3.2 ``expires_in``) expired
    unredeemed, and no token hangs off them. Nothing else ends such a grant (a session's ending
    or a poll's ``expired_token`` end theirs; a device that never polls again, a code never
    exchanged, leave theirs), so it would stay live for ever, an app connected to the account
    that got nothing (docs/security.md, "OAuth and OpenID Connect endpoints"); revoked, the
    grants rule deletes it once its codes are gone. A grant that issued anything is kept (a
    spent code or device code is the mark, a token too): its revocation history matters, a
    replayed refresh token must find its family revoked, and a logout still tells its client.

    Expired ``STAMPED_AHEAD_TOLERANCE`` before ``now``: a code's exchange or a device's poll
    spends only an unexpired row by its own clock, which a node's (or a request that waited)
    reads at most that far behind this one, so none spends what is taken back here. Returns how
    many grants were revoked; commits per batch."""
    condition = _unredeemed(now - STAMPED_AHEAD_TOLERANCE)
    return _in_batches(
        db, Grant.id, condition, lambda keys: update(Grant).where(Grant.id.in_(keys), condition)
        .values(revoked_at=now, revoked_reason=UNREDEEMED), batch_size, max_batches)  # fmt: skip


def _in_batches(
    db: Session,
    key: InstrumentedAttribute[Any],
    condition: ColumnElement[bool],
    statement: Callable[[list[Any]], Any],
    batch_size: int,
    max_batches: int | None,
) -> int:
    """``statement`` of the rows matching ``condition``, ``batch_size`` keys at a time, each
    batch committed, until none is left or ``max_batches`` ran; how many keys went."""
    done = batches = 0
    while max_batches is None or batches < max_batches:
        keys = list(db.scalars(select(key).where(condition).limit(batch_size)))
        if keys:
            db.execute(statement(keys), execution_options={"synchronize_session": False})
        db.commit()
        done += len(keys)
        batches += 1
        if len(keys) < batch_size:
            break
    return done


def cut_short(
    counts: dict[str, int], max_batches: int = OPPORTUNISTIC_BATCHES, batch_size: int = BATCH_SIZE
) -> bool:
    """Whether a bounded run stopped at its limit on some table (dead rows may be left)."""
    return any(count >= max_batches * batch_size for count in counts.values())


def claim_run(db: Session, now: datetime, interval: timedelta, name: str = JOB_NAME) -> bool:
    """Claim this interval's run for this node: True for exactly one of the nodes that ask.

    The conditional UPDATE is atomic on both databases (PostgreSQL re-checks the WHERE clause on
    the row it locked; SQLite serialises writers), so two nodes asking at once cannot both win.
    """
    dialect = db.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.execute(insert(MaintenanceRun).values(name=name, last_run_at=None).on_conflict_do_nothing())
    claimed = db.execute(
        update(MaintenanceRun)
        .where(
            MaintenanceRun.name == name,
            or_(MaintenanceRun.last_run_at.is_(None), MaintenanceRun.last_run_at <= now - interval),
        )
        .values(last_run_at=now)
    )
    db.commit()
    return bool(getattr(claimed, "rowcount", 0) == 1)


class PruneSchedule(IntervalGate):
    """One node's side of opportunistic pruning: ``due()`` says, from memory alone, whether this
    node should try to claim a run now (at most once per interval; thread-safe)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(interval, clock)
        #: The last run was cut short: the next one comes after CATCH_UP_INTERVAL.
        self.behind = False

    def claim_interval(self) -> timedelta:
        """How long since the last run (any node's) a claim needs: shorter while catching up."""
        return CATCH_UP_INTERVAL if self.behind else timedelta(seconds=self.interval)

    def after_run(self, counts: dict[str, int]) -> None:
        """Catch up soon after a run that was cut short; the usual interval otherwise."""
        self.behind = cut_short(counts)
        if self.behind:
            self.defer(CATCH_UP_INTERVAL.total_seconds())
