"""Refresh tokens (RFC 6749 6) as the rotation spends and records them: the statements, built once,
and what the token endpoint reads of a spent token. The decisions around them (a replay revokes
the grant, a retry of a lost answer) are ``idp.services.grants.GrantService``'s.

A rotation is sent in the request's ``Session`` (``GrantService.redeem_refresh_token``) or, when
it is the request's only work on the database, as one transaction on the thread's own
connection (``spend_refresh_token_apart``, idp.thin_reads ``begin``; docs/performance.md): the
same statements either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, or_, select

from idp.models import Client, Grant, RefreshToken, User
from idp.services.consume import consume_once_statement
from idp.services.crypto import token_hash

if TYPE_CHECKING:
    from idp.thin_reads import ThinTransaction


@dataclass(frozen=True)
class TokenUser:
    """The user a rotated refresh token's new tokens are for: all the token endpoint reads of
    them (``sub``), without loading the user."""

    id: str


@dataclass(frozen=True)
class RotatedGrant:
    """What a rotation needs of the grant: the family the new tokens join, and its user."""

    id: str
    user_id: str
    client_id: str
    #: Whether the client is restricted to groups as stored, read by the spend (not this
    #: process's cached copy of the registration): idp.oidc.group_gate.
    client_restricted: bool = False

    @property
    def user(self) -> TokenUser:
        return TokenUser(self.user_id)


@dataclass(frozen=True)
class SpentRefreshToken:
    """A refresh token spent by ``redeem_refresh_token``, as Authlib's refresh grant reads it
    (``check_client``, ``get_scope``; ``grant.user`` for ``authenticate_user``)."""

    token_hash: str
    client_id: str
    scope: str
    expires_at: datetime
    grant: RotatedGrant

    def check_client(self, client: Any) -> bool:
        return bool(self.client_id == client.client_id)

    def get_scope(self) -> str:
        return self.scope


@dataclass(frozen=True)
class RefreshRedemption:
    """What presenting a refresh token gave: the token to rotate (None: refused, ``invalid_grant``)
    and whether this was a retry of a rotation whose answer was lost."""

    token: SpentRefreshToken | None
    retried: bool = False
    #: The grant of a token this presentation spent, whether or not it then rotates: a refusal
    #: after the spend takes that grant back (idp.oidc.code_refusals ``take_back``).
    spent_grant: str | None = None


_REFRESH_TOKENS = cast(Table, RefreshToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_USERS = cast(Table, User.__table__)
_CLIENTS = cast(Table, Client.__table__)
_rt, _g, _u, _c = _REFRESH_TOKENS.c, _GRANTS.c, _USERS.c, _CLIENTS.c

# The statements of a rotation, built once: it is the token endpoint's hottest path, and
# SQLAlchemy then reuses their compiled form without coercing and keying them per request.
# They run as Core on the session's connection (its transaction, committed by the view) or in
# a thin transaction (idp.oidc.rotation): no ORM object is loaded or flushed for them.
#: What the spend of a refresh token returns: the row's own columns, and by correlated
#: subqueries its grant's user and revocation and that user's disabling (one statement).
#: No subquery joins: SQLite's RETURNING names columns without their table (SQLAlchemy renders
#: it so), and every name below is then still only one table's.
_GRANT_USER = select(_g.user_id).where(_g.id == _rt.grant_id).correlate(_REFRESH_TOKENS)
_REDEEMED = (
    _rt.grant_id,
    _rt.scope,
    _rt.expires_at,
    _GRANT_USER.scalar_subquery().label("user_id"),
    select(_g.revoked_at).where(_g.id == _rt.grant_id).scalar_subquery().label("grant_revoked_at"),
    select(_u.disabled_at).where(_u.id == _GRANT_USER.scalar_subquery())
    .scalar_subquery().label("user_disabled_at"),
    # The client's registration as stored, not this process's cached copy: a client disabled
    # on another node rotates nothing from then on (docs/security.md, "OAuth and OpenID Connect
    # endpoints"). By the parameter, not ``refresh_tokens.client_id`` (the spend's WHERE makes
    # them equal): SQLite's RETURNING names that column unqualified, and inside ``FROM clients``
    # it would be theirs.
    select(_c.disabled_at).where(_c.client_id == bindparam("client"))
    .scalar_subquery().label("client_disabled_at"),
    select(_c.restricted_to_groups).where(_c.client_id == bindparam("client"))
    .scalar_subquery().label("client_restricted"),
)  # fmt: skip
#: RFC 9449 5: a refresh token bound to a DPoP key is spent only by a request whose proof was
#: signed by that key (``jkt``: the proof's thumbprint, None without a proof, which matches no
#: bound token). In the spend itself: a token presented with another key, or none, stays unspent,
#: so that whoever stole it can neither use it nor burn it (``refused_refresh_token``).
_KEY_MATCHES = or_(_rt.jkt.is_(None), _rt.jkt == bindparam("jkt"))
SPEND_REFRESH_TOKEN = consume_once_statement(
    _REFRESH_TOKENS,
    _rt.token_hash == bindparam("digest"),
    _rt.client_id == bindparam("client"),
    _KEY_MATCHES,
    columns=_REDEEMED,
)
SPENT_REFRESH_TOKEN = select(*_REDEEMED).where(_rt.token_hash == bindparam("digest"))
FIND_REFRESH_TOKEN = select(
    _rt.client_id,
    _rt.grant_id,
    _rt.consumed_at,
    _rt.jkt,
    _GRANT_USER.scalar_subquery().label("user_id"),
).where(_rt.token_hash == bindparam("digest"))


def refresh_token_digest(token: str) -> str | None:
    """The hash a presented refresh token is stored by, or None for what cannot be one."""
    return token_hash(token) if token and len(token) <= 200 else None


#: Built once (``scope_of_refresh_token``): a token's scope, read without spending it.
_SCOPE_OF = select(_rt.scope).where(
    _rt.token_hash == bindparam("digest"), _rt.client_id == bindparam("client")
)


def scope_of_refresh_token(reads: Any, token: str, client_id: str) -> str | None:
    """The scope ``client_id``'s refresh ``token`` was issued with, None when it is no token of
    that client's; read by ``reads`` (``ThinReads`` or a ``Session``'s ``statements_of``)
    without spending it."""
    digest = refresh_token_digest(token)
    if digest is None:
        return None
    row = reads.first(_SCOPE_OF, {"digest": digest, "client": client_id})
    return None if row is None else str(row.scope)


def rotated(row: Any, digest: str, client_id: str, now: datetime) -> SpentRefreshToken | None:
    """The refresh token the spend returned ``row`` of, or None if it must rotate nothing: expired,
    its grant revoked, its user or client disabled (RFC 6749 5.2 ``invalid_grant``)."""
    if row.expires_at <= now or row.grant_revoked_at is not None:
        return None
    if row.user_disabled_at is not None or row.client_disabled_at is not None:
        return None
    grant = RotatedGrant(id=row.grant_id, user_id=row.user_id, client_id=client_id,
                         client_restricted=bool(row.client_restricted))  # fmt: skip
    return SpentRefreshToken(token_hash=digest, client_id=client_id, scope=row.scope,
                             expires_at=row.expires_at, grant=grant)  # fmt: skip


def spend_refresh_token_apart(
    transaction: ThinTransaction, digest: str, client_id: str, now: datetime, jkt: str | None
) -> RefreshRedemption | None:
    """``GrantService.redeem_refresh_token``'s spend, the same statement, as the first of a
    rotation sent in ``transaction`` (idp.thin_reads ``begin``) instead of the request's
    ``Session``. None when it spent nothing (an unknown token, another client's, or one spent
    before): what that means, a replay that revokes the grant or a retry, is decided by
    ``GrantService.refused_refresh_token`` in the request's ``Session``, after the caller rolled
    ``transaction`` back."""
    row = transaction.first(
        SPEND_REFRESH_TOKEN, {"spent_at": now, "digest": digest, "client": client_id, "jkt": jkt}
    )
    if row is None:
        return None
    return RefreshRedemption(rotated(row, digest, client_id, now), spent_grant=row.grant_id)


def refresh_token_row(
    token: str, *, grant_id: str, client_id: str, scope: str, ttl: int, now: datetime,
    parent_hash: str | None, jkt: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A refresh token's row: its hash under its grant (the family a replay revokes), the
    refresh token whose rotation issued it (``parent_hash``, None for a code's), and the DPoP key
    it is bound to (``jkt``, RFC 9449 5; None: unbound)."""
    return {"token_hash": token_hash(token), "grant_id": grant_id, "client_id": client_id,
            "scope": scope, "issued_at": now, "expires_at": now + timedelta(seconds=ttl),
            "consumed_at": None, "parent_hash": parent_hash, "jkt": jkt}  # fmt: skip
