"""Bearer tokens of the admin API: create, list, revoke, and authenticate (docs/api.md).

No Flask: the console, the ``idp api-tokens`` commands and the API share this service.

docs/security.md, "Admin API":

- A token is ``idp_`` and 32 random bytes, base64url (256 bits): nobody guesses one.
- Only its HMAC-SHA256 under a key derived from the secret key is stored, so a leaked database
  alone yields no usable token; a presented token is looked up by that hash and compared with
  ``hmac.compare_digest``.
- Expired and revoked tokens fail exactly like unknown ones (401 ``invalid_token``); every failure
  is audited and counted against the client's address.
- A token made in the console works only while the admin who made it is an active admin
  (idp.services.token_creators).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.clock import SYSTEM_CLOCK, Clock
from idp.errors import DomainError
from idp.models import ApiToken, User
from idp.models.base import utcnow
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.crypto import KeyedHasher
from idp.services.login_links import end_links_issued_by
from idp.services.pages import CONSOLE_PAGE, Page, keyset_page
from idp.services.token_creators import (
    CREATOR_DELETED,
    CREATOR_DEMOTED,
    CREATOR_DISABLED,
    WHY,
    creator_id_of,
    creator_refusal,
    lock_creator,
)

#: Every scope a token may hold. ``<x>:write`` implies ``<x>:read`` (``granted``).
SCOPES = (
    "clients:read",
    "clients:write",
    "users:read",
    "users:write",
    "admins:write",
    "groups:read",
    "groups:write",
    "audit:read",
    "login-links:write",
)
#: What acting on an admin account needs, beside the operation's own scope: making an admin,
#: changing, disabling or deleting one, issuing their rescue link. An admin can do everything
#: (a console session mints tokens of every scope), so a token that could make one, or take one
#: over, could give itself every scope: ``users:write`` alone reaches only other accounts.
ADMINS_SCOPE = "admins:write"
#: Scopes a scope includes besides its own read scope: ``admins:write`` is ``users:write`` for
#: every account.
INCLUDES = {ADMINS_SCOPE: ("users:write", "users:read")}
PREFIX = "idp_"
#: ``idp_`` and 32 bytes in unpadded base64url (RFC 4648 5): 43 characters.
TOKEN_FORMAT = re.compile(r"idp_[A-Za-z0-9_-]{43}")
#: A token's name is a slug, so that ``api-token:<name>`` reads well in the audit log.
TOKEN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,47}")
MAX_EXPIRES_IN_DAYS = 3650
#: ``last_used_at`` is written at most this often per token: a busy automation must not turn
#: every API call into a write on one row.
LAST_USED_RESOLUTION = timedelta(minutes=5)
#: Failed token authentications per client address in a fixed window (as the sign-in pages'
#: per-address failures, idp.services.rate_limits).
FAILED_AUTH_LIMIT = 50
FAILED_AUTH_WINDOW = timedelta(hours=1)
ACTOR_PREFIX = "api-token:"
#: Where a new token's request is about to check its creator (tests hold it here while the
#: creator is demoted).
CREATING_CHECKPOINT = "api_tokens.creating"
#: Where it holds its creator's row, found an active admin (tests demote them meanwhile).
CREATOR_HELD_CHECKPOINT = "api_tokens.creator_held"


class ApiTokenError(DomainError):
    """The token cannot be created or revoked as asked; the message says why."""


class Refusal(Enum):
    """Why a presented token was not accepted (all answered alike: 401 ``invalid_token``)."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    #: Its creator is no longer an active admin (idp.services.token_creators).
    CREATOR_DISABLED = CREATOR_DISABLED
    CREATOR_DEMOTED = CREATOR_DEMOTED
    CREATOR_DELETED = CREATOR_DELETED


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    #: Shown once at creation, never stored.
    secret: str


def granted(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a token holds, with each write scope's read scope (and what ``INCLUDES``
    adds)."""
    held = set(scopes)
    for scope in list(held):
        held.update(INCLUDES.get(scope, ()))
    for scope in list(held):
        family, _, access = scope.partition(":")
        if access == "write" and f"{family}:read" in SCOPES:
            held.add(f"{family}:read")
    return frozenset(held)


def actor_of(token: ApiToken) -> str:
    """The audit log's actor for changes made with the token."""
    return ACTOR_PREFIX + token.name


#: ``issuing_until``'s answer for a token that may no longer issue links.
NO_LONGER = "no longer"


def issuing_until(db: Session, actor_id: str, now: datetime) -> datetime | str | None:
    """Whether the token acting as ``actor_id`` (``api-token:<name>``) may still issue a link,
    its row held to the end of the transaction: a revocation committed first is seen here, one
    after waits for the link and ends it with the others (``end_links_issued_by``). ``NO_LONGER``
    if it may not; else when its authority ends (its expiry, None for a token that does not
    expire), which a link it issues does not outlive."""
    token = db.scalar(
        select(ApiToken)
        .where(ApiToken.name == actor_id.removeprefix(ACTOR_PREFIX))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if token is None or token.revoked_at is not None:
        return NO_LONGER
    if token.expires_at is not None and token.expires_at <= now:
        return NO_LONGER
    return token.expires_at


def new_token_secret() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenState:
    """Whether a token works, and why not when its creator is the reason."""

    #: ``active``, ``expired``, ``revoked``, or ``inactive``: its creator is no longer an active
    #: admin and nothing revoked it yet (a node on the previous version changed the creator).
    status: str
    #: ``creator_disabled``, ``creator_demoted``, ``creator_deleted`` (token_creators), or None.
    reason: str | None = None

    @property
    def why(self) -> str:
        """What the console and the CLI say of a token that does not work, or ""."""
        return WHY.get(self.reason or "", "")


@dataclass(frozen=True)
class Listed:
    token: ApiToken
    state: TokenState
    #: The creator's email; None: made on the command line, or its creator was deleted.
    creator: str | None


def state_of(token: ApiToken, now: datetime, creator: User | None = None) -> TokenState:
    """``creator``: the row of ``token.created_by`` (None when it has none or it was deleted)."""
    if token.revoked_at is not None:
        return TokenState("revoked", token.revoked_reason)
    if token.expires_at is not None and token.expires_at <= now:
        return TokenState("expired")
    if reason := creator_refusal(token.created_by, creator):
        return TokenState("inactive", reason)
    return TokenState("active")


def describe_token(
    token: ApiToken, now: datetime | None = None, *, creator: User | None = None
) -> dict[str, Any]:
    """A token as the console, the CLI and ``--json`` show it: never the secret or its hash."""
    state = state_of(token, now or utcnow(), creator)
    return {
        "name": token.name,
        "scopes": list(token.scopes),
        "status": state.status,
        "reason": state.reason,
        "created_by": creator.email if creator is not None else None,
        "created_at": token.created_at.isoformat(),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


class ApiTokenService:
    def __init__(
        self,
        db: Session,
        hasher: KeyedHasher,
        *,
        actor_id: str | None = audit.CLI_ACTOR,
        context: RequestContext | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.hasher = hasher
        self.actor_id = actor_id
        self.context = context or RequestContext()
        #: The time of a change made without an explicit ``now``.
        self.clock = clock

    def _audit(self, kind: str, outcome: str = "success", **details: Any) -> None:
        audit.record(self.db, kind, outcome=outcome, actor_id=self.actor_id,
                     context=self.context, **details)  # fmt: skip

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        expires_in_days: int | None = None,
        now: datetime | None = None,
    ) -> NewToken:
        now = now or self.clock.now()
        name = name.strip()
        if not TOKEN_NAME.fullmatch(name):
            raise ApiTokenError(
                f"invalid token name {name[:60]!r}: use 1 to 48 lowercase letters, digits, '-', "
                "'_' or '.', starting with a letter or digit"
            )
        wanted = list(dict.fromkeys(s.strip() for s in scopes))
        unknown = [s for s in wanted if s not in SCOPES]
        if unknown:
            raise ApiTokenError(f"unknown scope {unknown[0][:60]!r}: one of {', '.join(SCOPES)}")
        if not wanted:
            raise ApiTokenError("a token needs at least one scope")
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRES_IN_DAYS:
            raise ApiTokenError(f"a token expires in 1 to {MAX_EXPIRES_IN_DAYS} days")
        creator_id = creator_id_of(self.actor_id)
        checkpoints.reached(CREATING_CHECKPOINT)
        if creator_id is not None and lock_creator(self.db, creator_id):
            # Checked holding the creator's row: a demotion committed first is seen here, one
            # after this waits for the token and revokes it (idp.services.token_creators).
            raise ApiTokenError("only an active admin creates API tokens")
        checkpoints.reached(CREATOR_HELD_CHECKPOINT)
        secret = new_token_secret()
        token = ApiToken(
            name=name,
            token_hash=self.hasher.hash(secret),
            scopes=sorted(wanted, key=SCOPES.index),
            created_by=creator_id,
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        try:
            with self.db.begin_nested():
                self.db.add(token)
        except IntegrityError:
            # A revoked token keeps its name: the audit log's actor must stay unambiguous.
            raise ApiTokenError(f"a token named {name!r} already exists") from None
        expires_at = token.expires_at.isoformat() if token.expires_at else None
        self._audit("api_token.created", token=name, scopes=token.scopes, expires_at=expires_at)
        return NewToken(token=token, secret=secret)

    def list(self) -> list[ApiToken]:
        return list(self.db.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)))

    def listing(self, now: datetime, cursor: str | None = None) -> Page[Listed]:
        """A page of the tokens by name (keyset, idp.services.pages), each with whether it
        works and who made it: two statements whatever the page."""
        page = keyset_page(self.db, select(ApiToken), ApiToken.name, cursor=cursor,
                           limit=CONSOLE_PAGE)  # fmt: skip
        tokens = page.items
        ids = {t.created_by for t in tokens if t.created_by}
        creators = {u.id: u for u in self.db.scalars(select(User).where(User.id.in_(ids)))}
        found = []
        for token in tokens:
            creator = creators.get(token.created_by or "")
            found.append(Listed(token, state_of(token, now, creator),
                                creator.email if creator else None))  # fmt: skip
        return Page(found, page.next_cursor, page.previous_cursor)

    def creator(self, token: ApiToken) -> User | None:
        return self.db.get(User, token.created_by) if token.created_by else None

    def get(self, name: str) -> ApiToken | None:
        if not name or len(name) > 48:
            return None
        return self.db.scalar(select(ApiToken).where(ApiToken.name == name.strip()))

    def revoke(self, name: str, *, now: datetime | None = None) -> ApiToken:
        token = self.get(name)
        if token is None:
            raise ApiTokenError(f"no token named {name[:60]!r}")
        if token.revoked_at is None:
            token.revoked_at = now or self.clock.now()
            # The unspent links it issued end with it (a leaked token's rescue links would
            # outlive its revocation by up to a day: idp.services.login_links).
            self.db.flush()
            links = end_links_issued_by(self.db, [actor_of(token)], token.revoked_at)
            self._audit("api_token.revoked", token=token.name, links_revoked=links)
        return token

    # -- the API's side ---------------------------------------------------------------------------
    def authenticate(self, presented: str, now: datetime) -> ApiToken | Refusal:
        """The live token ``presented`` is, or why not. Looked up by its keyed hash (an index
        lookup, no comparison against other tokens' hashes), then compared in constant time."""
        if not TOKEN_FORMAT.fullmatch(presented):
            return Refusal.MALFORMED
        digest = self.hasher.hash(presented)
        # The creator in the same statement: a token is worth what its creator is now.
        found = self.db.execute(
            select(ApiToken, User)
            .outerjoin(User, User.id == ApiToken.created_by)
            .where(ApiToken.token_hash == digest)
        ).first()
        if found is None or not self.hasher.verify(found[0].token_hash, presented):
            return Refusal.UNKNOWN
        token, creator = found
        if token.revoked_at is not None:
            return Refusal.REVOKED
        if token.expires_at is not None and token.expires_at <= now:
            return Refusal.EXPIRED
        if reason := creator_refusal(token.created_by, creator):
            return Refusal(reason)
        return token

    def record_failure(self, refusal: Refusal, presented: str) -> None:
        """Audit a refused token: its name when it was one of ours (expired or revoked)."""
        details: dict[str, Any] = {"reason": refusal.value}
        if refusal not in (Refusal.MALFORMED, Refusal.UNKNOWN):
            token = self.db.scalar(
                select(ApiToken).where(ApiToken.token_hash == self.hasher.hash(presented))
            )
            if token is not None:
                details["token"] = token.name
        audit.record(self.db, "api.authentication_failed", outcome="failure",
                     context=self.context, **details)  # fmt: skip

    def record_denial(self, token: ApiToken, scope: str, operation: str) -> None:
        """Audit a request the token's scopes do not allow, as the token (OWASP ASVS 4.0 7.1.3:
        access control failures are logged)."""
        audit.record(self.db, "api.access_denied", outcome="failure", actor_id=actor_of(token),
                     context=self.context, scope=scope, operation=operation,
                     via="api")  # fmt: skip

    def touch(self, token: ApiToken, now: datetime) -> None:
        """Record the use, at most once per ``LAST_USED_RESOLUTION`` (a conditional UPDATE: of
        parallel requests at most one writes)."""
        if token.last_used_at is not None and now - token.last_used_at < LAST_USED_RESOLUTION:
            return
        self.db.execute(
            update(ApiToken)
            .where(
                ApiToken.id == token.id,
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at < now - LAST_USED_RESOLUTION,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
