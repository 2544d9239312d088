"""Where a WebAuthn ceremony's challenge waits between the options and the answer.

A challenge is short-lived state every node must see (stateless nodes) and is spent at
most once (docs/architecture.md, "Invariants"; WebAuthn L3 13.4.3: challenges are what stops a
captured answer being replayed). Two stores keep it:

- ``DatabaseChallenges``: a ``webauthn_challenges`` row, spent through the consume-once primitive
  (``UPDATE ... WHERE consumed_at IS NULL``); the default, and the store without Redis.
- ``RedisChallenges`` (``IDP_REDIS_URL`` set): one key ``idp:challenge:<id>`` written with
  ``SET ... EX <lifetime>`` and spent with ``GETDEL``, which Redis runs atomically (>= 6.2): of
  any number of parallel answers on any number of nodes, exactly one reads the value.

Both answer ``spend`` with the challenge only when it is live, of the ceremony asked for and bound
to the same browser; the caller checks the rest (the registering user, the signed challenge).

The sign-in page's own challenge waits nowhere (``SignedChallenges``): its id carries its expiry
and an HMAC over the challenge, the ceremony, the browser binding and the expiry, so showing the
page writes nothing (RFC 9110 9.2.1: a GET is safe) and spends no storage budget. It is spent
when an answer to it verifies, by ``claim``: an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
of its spent row (pruned with the other expired challenges) or ``SET NX`` in Redis, which of any
number of parallel answers exactly one wins, as with ``spend``.
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table
from sqlalchemy.orm import Session

from idp.clock import KEPT_PAST_EXPIRY, stamped_ahead
from idp.models import WebAuthnChallenge
from idp.models.base import random_id
from idp.services.consume import consume_once_returning
from idp.services.crypto import PageSigner, token_hash
from idp.services.dependencies import CircuitBreaker, redis_calls
from idp.session_statements import statements_of
from idp.thin_statements import insert_unless_exists

REDIS_KEY_PREFIX = "idp:challenge:"
#: WebAuthn L3 5.4.3 recommends 300 000 ms for UV-required ceremonies; never longer.
CHALLENGE_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class Challenge:
    """An issued challenge: what the answer is checked against."""

    id: str
    kind: str  # "registration" | "authentication"
    challenge: str  # base64url, as sent in the options
    #: SHA-256 of the browser binding (idp.web.sessions.browser_binding).
    binding_hash: str
    #: For registration: the user the credential will belong to.
    user_id: str | None
    created_at: datetime
    expires_at: datetime


class ChallengeStore(Protocol):
    def issue(
        self,
        *,
        kind: str,
        challenge: str,
        binding_hash: str,
        user_id: str | None,
        now: datetime,
        expires_at: datetime,
    ) -> Challenge: ...

    def spend(
        self, challenge_id: str, *, kind: str, binding_hash: str, now: datetime
    ) -> Challenge | None:
        """The challenge, spent by this call; None when it is unknown, spent already, expired,
        of another ceremony or another browser's."""
        ...

    def claim(self, challenge: Challenge, now: datetime) -> bool:
        """Record a signed challenge (``SignedChallenges``) as spent: True for the one call that
        did, False when it was spent already."""
        ...


class DatabaseChallenges:
    """Challenges as ``webauthn_challenges`` rows in the shared database (pruned when expired)."""

    def __init__(self, db: Session) -> None:
        self.db = db

    def issue(
        self,
        *,
        kind: str,
        challenge: str,
        binding_hash: str,
        user_id: str | None,
        now: datetime,
        expires_at: datetime,
    ) -> Challenge:
        row = WebAuthnChallenge(kind=kind, challenge=challenge, binding_hash=binding_hash,
                                user_id=user_id, created_at=now, expires_at=expires_at)  # fmt: skip
        self.db.add(row)
        self.db.flush()
        return _from_row(row)

    def spend(
        self, challenge_id: str, *, kind: str, binding_hash: str, now: datetime
    ) -> Challenge | None:
        spent = consume_once_returning(
            self.db,
            WebAuthnChallenge,
            WebAuthnChallenge.id == challenge_id,
            WebAuthnChallenge.kind == kind,
            WebAuthnChallenge.binding_hash == binding_hash,
            WebAuthnChallenge.expires_at > now,
            now=now,
            columns=WebAuthnChallenge.__table__.columns,
        )
        return None if spent is None else _from_row(spent)

    def claim(self, challenge: Challenge, now: datetime) -> bool:
        # The primary key decides: a second INSERT of the same id waits for the first one's
        # transaction (PostgreSQL) or for the write lock (SQLite), then inserts nothing.
        # In the request's transaction; Core, no ORM layer.
        return statements_of(self.db).inserted(_CLAIM, {
            "id": _spent_id(challenge), "kind": challenge.kind, "challenge": challenge.challenge,
            "binding_hash": challenge.binding_hash, "user_id": None, "created_at": now,
            "expires_at": challenge.expires_at + KEPT_PAST_EXPIRY, "consumed_at": now,
        })  # fmt: skip


_CHALLENGES = cast(Table, WebAuthnChallenge.__table__)
#: Built once: the spent row of a signed challenge, inserted unless it exists (both dialects).
_CLAIM = insert_unless_exists(_CHALLENGES, _CHALLENGES.c.id, returning=_CHALLENGES.c.id)


def _spent_id(challenge: Challenge) -> str:
    """The row (or key) that marks a signed challenge spent: from the random challenge itself."""
    return token_hash(challenge.challenge)[:32]


class RedisChallenges:
    """Challenges in Redis: never in the database, gone by themselves when they expire.

    ``GETDEL`` spends the key before the checks below, so an answer from the wrong browser or for
    the wrong ceremony spends it too (the database store leaves such a challenge live): the
    legitimate browser then starts a new ceremony. Failing closed keeps the spend one atomic
    command; nobody but that browser was ever sent the challenge id. While ``breaker`` is open
    (idp.services.dependencies.CircuitBreaker) Redis is not asked: a refusal at once.
    """

    def __init__(self, client: Any, breaker: CircuitBreaker | None = None) -> None:
        self.client, self.breaker = client, breaker

    def issue(
        self,
        *,
        kind: str,
        challenge: str,
        binding_hash: str,
        user_id: str | None,
        now: datetime,
        expires_at: datetime,
    ) -> Challenge:
        issued = Challenge(id=random_id(), kind=kind, challenge=challenge,
                           binding_hash=binding_hash, user_id=user_id, created_at=now,
                           expires_at=expires_at)  # fmt: skip
        value = json.dumps({
            "kind": kind, "challenge": challenge, "binding_hash": binding_hash,
            "user_id": user_id, "created_at": now.isoformat(),
            "expires_at": expires_at.isoformat(),
        })  # fmt: skip
        lifetime = max(1, math.ceil((expires_at - now).total_seconds()))
        # NX: a (128-bit random) id that already exists is never overwritten.
        with redis_calls(self.breaker):  # Redis down: a 503 refusal (docs/operations.md, "Redis")
            stored = self.client.set(REDIS_KEY_PREFIX + issued.id, value, ex=lifetime, nx=True)
        if not stored:
            raise RuntimeError("challenge id collision")
        return issued

    def spend(
        self, challenge_id: str, *, kind: str, binding_hash: str, now: datetime
    ) -> Challenge | None:
        with redis_calls(self.breaker):
            raw = self.client.getdel(REDIS_KEY_PREFIX + challenge_id)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            found = Challenge(
                id=challenge_id, kind=str(data["kind"]), challenge=str(data["challenge"]),
                binding_hash=str(data["binding_hash"]),
                user_id=None if data["user_id"] is None else str(data["user_id"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                expires_at=datetime.fromisoformat(data["expires_at"]),
            )  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None
        # The same three conditions as the database store's UPDATE. The expiry is checked here
        # too, not left to the key's EX alone: ``now`` is the service's clock, and a node's clock
        # and Redis's may disagree by a second.
        if found.kind != kind or found.expires_at <= now:
            return None
        if not hmac.compare_digest(found.binding_hash.encode(), binding_hash.encode()):
            return None
        return found

    def claim(self, challenge: Challenge, now: datetime) -> bool:
        kept_until = challenge.expires_at + KEPT_PAST_EXPIRY
        lifetime = max(1, math.ceil((kept_until - now).total_seconds()))
        with redis_calls(self.breaker):
            stored = self.client.set(
                REDIS_KEY_PREFIX + "spent:" + _spent_id(challenge), "1", ex=lifetime, nx=True
            )
        return bool(stored)


class ChallengeSigner(PageSigner):
    """Issues and checks the ids of sign-in challenges that are not stored until an answer to
    one verifies (module docstring); ``SignedChallenges`` adds the store that spends them. Alone
    it needs no database: the sign-in page issues one and stores nothing.

    The id is ``<expiry, Unix seconds>.<tag>``: the tag is 128 bits of an HMAC-SHA256 under a key
    derived from the deployment's secret key, over the ceremony, the browser binding's hash, the
    expiry and the challenge, so nobody else can make one, and one browser's challenge is no
    use in another browser (WebAuthn L3 13.4.3). Stored ids have no dot.
    """

    PURPOSE = "idp webauthn challenges"

    def issue(
        self, *, kind: str, challenge: str, binding_hash: str, now: datetime, expires_at: datetime
    ) -> Challenge:
        expiry = int(expires_at.timestamp())
        tag = self._tag(kind, challenge, binding_hash, expiry)
        return Challenge(id=f"{expiry}.{tag}", kind=kind, challenge=challenge,
                         binding_hash=binding_hash, user_id=None, created_at=now,
                         expires_at=datetime.fromtimestamp(expiry, UTC))  # fmt: skip

    def check(
        self, challenge_id: str, challenge: str, kind: str, binding_hash: str, now: datetime
    ) -> Challenge | None:
        """The challenge when ``challenge_id`` was issued for it, this ceremony and this browser
        and has not expired; not spent by this call (``store.claim`` spends it)."""
        expiry_text, _, tag = challenge_id.partition(".")
        digits = expiry_text.isascii() and expiry_text.isdigit() and len(expiry_text) <= 11
        if not digits or not challenge or len(tag) > 64:
            return None
        expiry = int(expiry_text)
        expected = self._tag(kind, challenge, binding_hash, expiry)
        # As bytes: compare_digest refuses str with characters outside ASCII (anyone's input).
        if not hmac.compare_digest(tag.encode(), expected.encode()):
            return None
        expires_at = datetime.fromtimestamp(expiry, UTC)
        # Its expiry less its lifetime dates its issue. Issued more than the tolerance after now,
        # it came from a clock stepped back since (NTP after the clock ran ahead, a restored VM)
        # or from a node far ahead: its spent row (kept KEPT_PAST_EXPIRY past the expiry) may
        # have been pruned on that clock, and a captured answer would sign in again.
        if expires_at <= now or stamped_ahead(expires_at - CHALLENGE_TTL, now):
            return None
        return Challenge(id=challenge_id, kind=kind, challenge=challenge,
                         binding_hash=binding_hash, user_id=None, created_at=now,
                         expires_at=expires_at)  # fmt: skip

    def _tag(self, kind: str, challenge: str, binding_hash: str, expiry: int) -> str:
        return self.tag_of(f"{kind}\n{binding_hash}\n{expiry}\n{challenge}")


@dataclass(frozen=True)
class SignedChallenges:
    """The node's ``ChallengeSigner`` with the store that spends each of its challenges once
    (``store.claim``)."""

    signer: ChallengeSigner
    store: ChallengeStore


def is_signed(challenge_id: str) -> bool:
    """An id of ``SignedChallenges`` (stored ids are ``random_id`` values, without a dot)."""
    return "." in challenge_id


def _from_row(row: Any) -> Challenge:
    """A challenge from a ``webauthn_challenges`` row, or the row an UPDATE ... RETURNING gave."""
    return Challenge(id=row.id, kind=row.kind, challenge=row.challenge,
                     binding_hash=row.binding_hash, user_id=row.user_id,
                     created_at=row.created_at, expires_at=row.expires_at)  # fmt: skip
