"""The OAuth 2.0 Device Authorization Grant (RFC 8628): device and user codes, the user's
decision on the verification page, and the device's polls of the token endpoint.

No Flask here: ``idp.oidc.server`` wires the device authorization endpoint and the token grant to
Authlib, ``idp.device`` shows the verification page. docs/security.md, "Device authorization
grant", lists the rules with their tests.

- **Two secrets, each spent once** through the consume-once primitive: the user code when the
  user approves or denies (``decided_at``), the device code when tokens are issued
  (``consumed_at``). A device code presented again after that revokes the grant, as a replayed
  authorization code does (RFC 6749 4.1.2, RFC 9700 4.2.4).
- **User codes are guessable by design** (8 letters, RFC 8628 6.1), so they live minutes, are
  stored under a keyed hash, and every attempt to enter one is counted before it is checked, per
  account and per client address, by the same attempt limiter as passwords (RFC 8628 5.1).
- **Polling has a pace** (RFC 8628 3.5): a poll sooner than ``interval`` after the previous one is
  answered ``slow_down`` and the interval grows by 5 seconds for every later poll.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.models import BrowserSession, Client, DeviceAuthorization, Grant, User
from idp.models.oauth import DEVICE_APPROVED, DEVICE_DENIED
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.consume import consume_once
from idp.services.crypto import KeyedHasher, new_secret, token_hash
from idp.services.grants import GrantService
from idp.services.rate_limits import AttemptLimiter, Verdict
from idp.services.session_locks import session_stands

DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 6.1: consonants only (no words can be spelt) and no look-alikes (no 0/O, 1/I/L
#: confusion: there are no digits and no vowels); 20 letters, 8 of them: about 34.6 bits.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
#: RFC 8628 3.5: each ``slow_down`` adds 5 seconds to the interval, for this and every later poll.
SLOW_DOWN_STEP = 5
#: The attempt limiter's factor name for user codes (its account key is ``user_code:<user id>``).
USER_CODE_FACTOR = "user_code"
DEVICE_CODE_REPLAY = "device_code_replay"
#: Why a grant ended when its device code was spent by a poll then refused (idp.oidc.code_refusals).
DEVICE_POLL_REFUSED = "device_poll_refused"
#: Why an approval's grant ended when the device code it waited for expired unspent.
DEVICE_APPROVAL_EXPIRED = "device_approval_expired"
#: Where an answer is held, in tests, after its session was accepted (idp.checkpoints).
DECIDE_CHECKPOINT = "device.decide"
#: Where a poll of an approved request is held, in tests, after it read the row and before it
#: spends the device code (idp.checkpoints).
POLL_CHECKPOINT = "device.poll"

#: Said of any text that cannot be a user code, eight letters with a vowel ("ABCD-EFGH") too (the
#: alphabet has none, RFC 8628 6.1): "not a code of eight letters" was untrue of those, and the
#: user could not tell what to fix.
MALFORMED = (
    "That is not a code a device shows: codes are eight letters without vowels. "
    "Check the code on your device."
)
WRONG_CODE = "That code is not valid: it may be mistyped, expired or already used."
THROTTLED = "Too many wrong codes. Wait a moment, then try again."
LOCKED = "Too many wrong codes. Ask an administrator to unlock device sign-in for you."
CLIENT_UNAVAILABLE = (
    "The app that asked for this code is no longer available: an administrator has turned it "
    "off. Nothing was shared with it."
)
GRANT_WITHDRAWN = (
    "The app that asked for this code may no longer sign in from a device: an administrator has "
    "changed its settings. Nothing was shared with it."
)


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    """``ABCDEFGH`` as shown to people: ``ABCD-EFGH`` (RFC 8628 6.1, readable in two halves)."""
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


#: What the verification page shows as its field's placeholder: a code of the real alphabet (RFC
#: 8628 6.1: no vowels), not "ABCD-EFGH", whose vowels no code holds.
USER_CODE_EXAMPLE = format_user_code(USER_CODE_ALPHABET[:USER_CODE_LENGTH])


def normalise_user_code(text: str) -> str | None:
    """What a person typed, as stored: RFC 8628 6.1 asks the server to ignore case and the
    punctuation it added (the dash), and spaces are what people type instead. None when what
    is left cannot be a user code at all."""
    code = "".join(text[:64].split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


@dataclass(frozen=True)
class IssuedDeviceCodes:
    """The secrets of a new device authorization, shown once to the device (RFC 8628 3.2)."""

    device_code: str
    user_code: str  # formatted, ABCD-EFGH
    expires_in: int
    interval: int


class PollOutcome(Enum):
    """The token endpoint's answers to a device's poll (RFC 8628 3.5, RFC 6749 5.2)."""

    PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    DENIED = "access_denied"
    EXPIRED = "expired_token"
    INVALID = "invalid_grant"
    APPROVED = "approved"


@dataclass(frozen=True)
class Poll:
    outcome: PollOutcome
    #: The approved authorization whose device code this poll spent (APPROVED only).
    authorization: DeviceAuthorization | None = None


@dataclass(frozen=True)
class Entry:
    """The verification page's lookup of a typed user code: the pending authorization, or why
    not (``error``, and the limiter's verdict when it refused)."""

    authorization: DeviceAuthorization | None
    error: str | None = None
    verdict: Verdict | None = None


class DeviceFlowService:
    def __init__(
        self,
        db: Session,
        user_codes: KeyedHasher,
        limiter: AttemptLimiter | None = None,
    ) -> None:
        self.db = db
        self.user_codes = user_codes
        self.limiter = limiter

    # -- the device authorization endpoint (RFC 8628 3.1, 3.2) ----------------------------------
    def start(
        self,
        client: Client,
        scope: str,
        *,
        ttl: int,
        interval: int,
        context: RequestContext,
        now: datetime,
    ) -> IssuedDeviceCodes:
        device_code = new_secret(32)  # RFC 8628 5.2: 256 bits, never guessed
        for _ in range(5):
            user_code = new_user_code()
            row = DeviceAuthorization(
                device_code_hash=token_hash(device_code),
                user_code_hash=self.user_codes.hash(user_code),
                client_id=client.client_id,
                scope=scope,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
                interval=interval,
            )
            try:
                # One code space for every live request: a user code names exactly one.
                with self.db.begin_nested():
                    self.db.add(row)
            except IntegrityError:
                continue
            break
        else:  # five collisions in a row: the table is far fuller than it can be
            raise RuntimeError("no free user code")
        audit.record(self.db, "device.authorization_requested", client_id=client.client_id,
                     context=context, scope=scope)  # fmt: skip
        return IssuedDeviceCodes(device_code, format_user_code(user_code), ttl, interval)

    # -- the verification page (RFC 8628 3.3) ---------------------------------------------------
    def enter(self, text: str, user: User, context: RequestContext, now: datetime) -> Entry:
        """Find the pending authorization of a typed user code. Every well-formed attempt is
        counted before it is checked, for the user and for the client address (RFC 8628 5.1;
        docs/security.md, "Attempt counters")."""
        assert self.limiter is not None
        code = normalise_user_code(text)
        if code is None:
            return Entry(None, MALFORMED)
        key = self.limiter.account_key(USER_CODE_FACTOR, user.id)
        attempt = self.limiter.reserve(key, context.ip_address, now)
        if not attempt.verdict.allowed:
            audit.record(self.db, "device.user_code", outcome="failure", subject_id=user.id,
                         context=context, reason="throttled")  # fmt: skip
            error = LOCKED if attempt.verdict.locked else THROTTLED
            return Entry(None, error, attempt.verdict)
        row = self.db.scalar(
            select(DeviceAuthorization).where(
                DeviceAuthorization.user_code_hash == self.user_codes.hash(code)
            )
        )
        # Single use (RFC 8628 3.3): a code already answered, or expired, is no code at all.
        if row is None or row.decided_at is not None or row.expires_at <= now:
            self.limiter.failed(attempt, now)
            audit.record(self.db, "device.user_code", outcome="failure", subject_id=user.id,
                         context=context, reason="wrong_code")  # fmt: skip
            return Entry(None, WRONG_CODE)
        # Not ``succeeded``: a code that exists proves nothing about the wrong ones typed before
        # it (the guesser's own device shows one), so the account's failures stand.
        self.limiter.answered(attempt)
        refusal = self.refusal(row)
        if refusal is not None:
            return Entry(None, refusal)
        # The review page lists what the approval grants: what the client may still ask for.
        row.scope = row.client.get_allowed_scope(row.scope)
        return Entry(row)

    def pending(self, authorization_id: str, now: datetime) -> DeviceAuthorization | None:
        """An authorization still waiting for its user's answer, by the id the review page
        carries (never the user code: the code was checked, and counted, once)."""
        row = self.db.get(DeviceAuthorization, authorization_id[:64])
        if row is None or row.decided_at is not None or row.expires_at <= now:
            return None
        return row

    def refusal(self, row: DeviceAuthorization) -> str | None:
        """Why the user may not answer ``row`` at all, or None. Its client was disabled since the
        device asked: the token endpoint refuses that client (RFC 6749 5.2 ``invalid_client``),
        so the user is not asked to approve a request nobody can redeem, nor lets a grant be
        opened for it (RFC 8628 3.3: the user reviews the request of a client idp serves). The
        same when an admin took the device grant from the client since: its polls are refused
        (RFC 6749 5.2 ``unauthorized_client``)."""
        if row.client.disabled_at is not None:
            return CLIENT_UNAVAILABLE
        if not row.client.check_grant_type(DEVICE_CODE_GRANT_TYPE):
            return GRANT_WITHDRAWN
        return None

    def decide(
        self,
        row: DeviceAuthorization,
        *,
        user: User,
        session: BrowserSession,
        approve: bool,
        context: RequestContext,
        now: datetime,
        reason: str | None = None,
    ) -> bool:
        """The user's answer, once: the user code is spent through the consume-once primitive,
        so of two answers (two tabs, a double click) exactly one counts. Approving opens the
        grant the device's tokens will hang off, with this session's sign-in (``sid``,
        ``auth_time``, ``amr``, ``acr``) as the code flow does. False: already answered, or
        ``session`` ended since the page accepted it: the answer waits for an ending in progress
        and sees it (``session_stands``: an approval opens its grant in that session, and an
        ending that comes second finds the grant, Back-Channel Logout 1.0 2.7)."""
        checkpoints.reached(DECIDE_CHECKPOINT)
        if not session_stands(self.db, session):
            return False
        if not consume_once(
            self.db, DeviceAuthorization, DeviceAuthorization.id == row.id, now=now,
            column="decided_at",
        ):  # fmt: skip
            return False
        row.decided_at = now
        row.user_id = user.id
        # An admin may have taken a scope from the client since the review page was shown
        # (RFC 6749 3.3): the grant, the consent and the device's tokens have no more.
        row.scope = row.client.get_allowed_scope(row.scope)
        if approve:
            grants = GrantService(self.db)
            grant = grants.open_grant(user=user, client=row.client, session=session,
                                      scope=row.scope, now=now)  # fmt: skip
            row.grant_id = grant.id
            row.decision = DEVICE_APPROVED
            if not row.client.first_party:
                # The review page is the consent screen of this flow (OIDC Core 3.1.2.4).
                grants.remember_consent(user.id, row.client_id, row.scope.split(), now)
            audit.record(self.db, "device.approved", subject_id=user.id,
                         client_id=row.client_id, context=context, scope=row.scope)  # fmt: skip
        else:
            row.decision = DEVICE_DENIED
            audit.record(self.db, "device.denied", outcome="failure", subject_id=user.id,
                         client_id=row.client_id, context=context,
                         reason=reason or "denied_by_user")  # fmt: skip
        return True

    def refuse_outside_groups(
        self, row: DeviceAuthorization, *, user: User, context: RequestContext
    ) -> None:
        """A user outside the client's allowed groups typed the request's user code (docs/admins.md,
        per-app access): audited, and nothing else. The request stays pending, its user code
        unspent: whoever knows a code (read off another's screen, a guess the attempt limits
        already counted) must not refuse that device's request, whose rightful user may still
        approve it (RFC 8628 3.3: the user who started the flow answers it; 5.1: user codes
        are guessable)."""
        audit.record(self.db, "device.access_refused", outcome="failure", subject_id=user.id,
                     client_id=row.client_id, context=context,
                     reason="not_in_allowed_groups")  # fmt: skip

    # -- the token endpoint (RFC 8628 3.4, 3.5) -------------------------------------------------
    def poll(self, device_code: str, client_id: str, now: datetime) -> Poll:
        if not device_code or len(device_code) > 200:
            return Poll(PollOutcome.INVALID)
        row = self.db.scalar(
            select(DeviceAuthorization).where(
                DeviceAuthorization.device_code_hash == token_hash(device_code)
            )
        )
        # RFC 6749 5.2 invalid_grant: unknown, or issued to another client.
        if row is None or row.client_id != client_id:
            return Poll(PollOutcome.INVALID)
        checkpoints.reached(POLL_CHECKPOINT)
        if row.consumed_at is not None:
            return self._replayed(row, now)
        if row.expires_at <= now:
            return self._expired(row, now)
        if row.decision == DEVICE_DENIED:
            return Poll(PollOutcome.DENIED)
        if row.decision == DEVICE_APPROVED:
            # Spent here, atomically: of parallel polls exactly one gets the tokens. Only while
            # unexpired: the end of the approving session expires an approval not yet polled
            # (idp.services.grants.GrantService.end_session_grants), and the row's lock orders
            # the two, so a poll that read the row before that ending committed issues nothing.
            if not consume_once(
                self.db, DeviceAuthorization, DeviceAuthorization.id == row.id,
                DeviceAuthorization.expires_at > now, now=now,
            ):  # fmt: skip
                return self._unspent(row, now)
            # Read again now that the row is spent: the grant loaded with it may have been
            # revoked since (its session ended, the app disconnected).
            grant = self.db.scalar(
                select(Grant)
                .where(Grant.id == row.grant_id)
                .execution_options(populate_existing=True)
            )
            if grant is None or grant.revoked_at is not None or not grant.user.is_active:
                # The device code is spent and will issue nothing: its grant is taken back
                # (one revoked already keeps its reason), or it would stay live with no token.
                if row.grant_id is not None:
                    GrantService(self.db).revoke_grant(row.grant_id, DEVICE_POLL_REFUSED, now)
                return Poll(PollOutcome.INVALID)
            return Poll(PollOutcome.APPROVED, row)
        return self._paced(row, now)

    def _paced(self, row: DeviceAuthorization, now: datetime) -> Poll:
        """A poll of a request still waiting (RFC 8628 3.5): ``authorization_pending`` when the
        previous poll was ``interval`` ago or more, else ``slow_down`` and 5 more seconds for
        this and every later poll. Decided by conditional UPDATEs, not by the row as read: of
        parallel polls that read the same previous poll, one is pending and the others are too
        soon (they are), and each ``slow_down`` adds its 5 seconds in the database, none lost."""
        last = row.last_polled_at
        if last is None or now >= last + timedelta(seconds=row.interval):
            unchanged = (
                DeviceAuthorization.last_polled_at.is_(None)
                if last is None
                else DeviceAuthorization.last_polled_at == last
            )
            paced = self.db.execute(
                update(DeviceAuthorization)
                .where(DeviceAuthorization.id == row.id, unchanged)
                .values(last_polled_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(paced, "rowcount", 0) == 1:
                return Poll(PollOutcome.PENDING)
        self.db.execute(
            update(DeviceAuthorization)
            .where(DeviceAuthorization.id == row.id)
            .values(last_polled_at=now, interval=DeviceAuthorization.interval + SLOW_DOWN_STEP)
            .execution_options(synchronize_session=False)
        )
        return Poll(PollOutcome.SLOW_DOWN)

    def _unspent(self, row: DeviceAuthorization, now: datetime) -> Poll:
        """The poll's spend found the row spent or expired since it read it: a parallel poll
        spent it first (a replay), or the approving session ended and expired it."""
        spent = self.db.scalar(
            select(DeviceAuthorization.consumed_at).where(DeviceAuthorization.id == row.id)
        )
        if spent is not None:
            return self._replayed(row, now)
        return self._expired(row, now)

    def _expired(self, row: DeviceAuthorization, now: datetime) -> Poll:
        """``expired_token`` (RFC 8628 3.5): the device starts again. An approval refused here
        (it expired unpolled, or its session ended) takes its grant back in the same
        transaction: its device code will never be spent, so the grant would stay live with no
        tokens, an app the user never got (docs/security.md, "Device authorization grant")."""
        if row.decision == DEVICE_APPROVED and row.grant_id is not None:
            GrantService(self.db).revoke_grant(row.grant_id, DEVICE_APPROVAL_EXPIRED, now)
        return Poll(PollOutcome.EXPIRED)

    def _replayed(self, row: DeviceAuthorization, now: datetime) -> Poll:
        """A device code presented after it was spent: as a replayed authorization code (RFC
        6749 4.1.2), it revokes the grant and every token issued from it. Either the device
        polled twice at once, or someone else holds the device code; either way nobody can
        tell which holder got the tokens."""
        if row.grant_id is not None:
            GrantService(self.db).revoke_grant(row.grant_id, DEVICE_CODE_REPLAY, now)
        audit.record(self.db, "device.code_replayed", outcome="failure",
                     subject_id=row.user_id, client_id=row.client_id)  # fmt: skip
        return Poll(PollOutcome.INVALID)
