"""What spending an authorization code reads (``GrantService.redeem_code``): the statement
that spends it once and returns, with it, its grant's sign-in and its user's claims, and the
objects Authlib's code grant reads instead of ORM rows (docs/performance.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, select

from idp.clock import stamped_ahead
from idp.models import AuthorizationCode, Client, Grant, User
from idp.models.oauth import CodeFacts
from idp.services.consume import consume_once_statement
from idp.services.crypto import token_hash

_GRANTS = cast(Table, Grant.__table__)
_USERS = cast(Table, User.__table__)
_CLIENTS = cast(Table, Client.__table__)
_g, _u, _c = _GRANTS.c, _USERS.c, _CLIENTS.c


@dataclass(frozen=True)
class CodeUser:
    """The user a code's tokens are for: what the ID token's standard claims are made of
    (idp.services.claims.ClaimsSubject), read with the code's spend."""

    id: str
    name: str
    email: str
    email_verified: bool

    def get_user_id(self) -> str:
        """Authlib's hook for the resource owner's id."""
        return self.id


@dataclass(frozen=True)
class CodeGrant:
    """What a code's token response needs of its grant: the family the tokens join, and the
    sign-in the ID token reports (OIDC Core 2: ``sid``, ``auth_time``, ``amr``, ``acr``)."""

    id: str
    user_id: str
    client_id: str
    sid: str | None
    auth_time: datetime
    amr: tuple[str, ...]
    acr: str
    user: CodeUser
    #: Whether the client is restricted to groups as stored, read by the spend (not this
    #: process's cached copy of the registration): idp.oidc.group_gate.
    client_restricted: bool = False
    #: The ``sub`` and ``sid`` recorded at the code's issue (``Grant.issued_sub``): the exchange
    #: records its own only when they differ (idp.oidc.token_issue ``save_token``).
    issued_sub: str | None = None
    issued_sid: str | None = None


@dataclass(frozen=True)
class SpentCode(CodeFacts):
    """An authorization code spent by ``redeem_code``, as Authlib's code grant and its PKCE and
    OpenID extensions read it (``AuthorizationCodeMixin``, ``code_challenge``)."""

    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    grant: CodeGrant


_CODES = cast(Table, AuthorizationCode.__table__)
_ac = _CODES.c
#: What the spend of a code returns: its own columns and, by correlated subqueries, its grant's
#: sign-in (OIDC Core 2: ``sid``, ``auth_time``, ``amr``, ``acr``), the grant's revocation, its
#: user's claims and disabling, and the client's disabling as stored (the token side's client is
#: a cached copy, docs/security.md "OAuth and OpenID Connect endpoints"). One statement, and no
#: joins: SQLite's RETURNING names columns without their table (as for the refresh token's,
#: idp.services.grants).
_CODE_USER = select(_g.user_id).where(_g.id == _ac.grant_id).correlate(_CODES)


def _of_grant(column: Any, label: str) -> Any:
    return (
        select(column).where(_g.id == _ac.grant_id).correlate(_CODES).scalar_subquery().label(label)
    )


def _of_code_user(column: Any, label: str) -> Any:
    return (
        select(column)
        .where(_u.id == _CODE_USER.scalar_subquery())
        .correlate(_CODES)
        .scalar_subquery()
        .label(label)
    )


_CODE_REDEEMED = (
    _ac.grant_id,
    _ac.redirect_uri,
    _ac.scope,
    _ac.nonce,
    _ac.code_challenge,
    _ac.code_challenge_method,
    _ac.expires_at,
    _of_grant(_g.user_id, "user_id"),
    _of_grant(_g.sid, "sid"),
    _of_grant(_g.auth_time, "auth_time"),
    _of_grant(_g.amr, "amr"),
    _of_grant(_g.acr, "acr"),
    _of_grant(_g.revoked_at, "grant_revoked_at"),
    _of_grant(_g.issued_sub, "issued_sub"),
    _of_grant(_g.issued_sid, "issued_sid"),
    _of_code_user(_u.name, "user_name"),
    _of_code_user(_u.email, "user_email"),
    _of_code_user(_u.email_verified, "user_email_verified"),
    _of_code_user(_u.disabled_at, "user_disabled_at"),
    # By the parameter (the spend's WHERE makes it the code's client): SQLite's RETURNING names
    # the code's client_id unqualified, which inside FROM clients would be the clients' own.
    select(_c.disabled_at).where(_c.client_id == bindparam("client"))
    .scalar_subquery().label("client_disabled_at"),
    select(_c.restricted_to_groups).where(_c.client_id == bindparam("client"))
    .scalar_subquery().label("client_restricted"),
)  # fmt: skip
#: RFC 9449 10: a code bound to a DPoP key (``dpop_jkt``) is spent only by a request whose proof
#: is of that key (``jkt``: the proof's thumbprint, None without one); another key leaves it
#: unspent, so whoever intercepted it can neither exchange nor burn it.
SPEND_CODE = consume_once_statement(
    _CODES,
    _ac.code_hash == bindparam("digest"),
    _ac.client_id == bindparam("client"),
    or_(_ac.dpop_jkt.is_(None), _ac.dpop_jkt == bindparam("jkt")),
    columns=_CODE_REDEEMED,
)
FIND_CODE = select(_ac.client_id, _ac.grant_id, _ac.consumed_at).where(
    _ac.code_hash == bindparam("digest")
)


def code_digest(code: str) -> str | None:
    """The hash a presented code is stored by, or None for what cannot be one."""
    return token_hash(code) if code and len(code) <= 200 else None


def spend_refusal(row: Any, now: datetime, lifetime: timedelta) -> str | None:
    """Why the code ``SPEND_CODE`` spent, returning ``row``, must issue nothing (RFC 6749 5.2
    ``invalid_grant``), or None: expired, its grant revoked, its user or client disabled; named
    as its grant's revocation (``REFUSED_EXPIRED_CODE`` and those beside it).

    ``lifetime`` (``code_ttl``) dates the code's issue from its expiry. A code issued more than
    a minute after ``now`` (idp.clock ``stamped_ahead``) was issued by a clock stepped back since
    (NTP after the clock ran ahead, a restored VM) or by a node far ahead of this one: its age is
    unknown, and taking only its expiry would revive, for as long as the step, every code issued
    and expired while the clock ran ahead (RFC 9700 4.2: codes are short-lived)."""
    if row.expires_at <= now or stamped_ahead(row.expires_at - lifetime, now):
        return REFUSED_EXPIRED_CODE
    if row.grant_revoked_at is not None:
        return GRANT_REVOKED
    if row.user_disabled_at is not None:
        return REFUSED_USER_DISABLED
    if row.client_disabled_at is not None:
        return REFUSED_CLIENT_DISABLED
    return None


def spent_code(
    row: Any, client_id: str, now: datetime, lifetime: timedelta,
    write: Callable[[Any, Mapping[str, Any]], int],
) -> SpentCode | None:  # fmt: skip
    """The code ``SPEND_CODE`` returned ``row`` of, or None if it must issue nothing
    (``spend_refusal``). Then its grant is taken back by ``write``, in the spend's transaction
    (the ``Session``'s or the one apart, idp.oidc.rotation), as a refusal after the spend takes
    it (idp.oidc.code_refusals): the code is spent, pruning keeps a grant whose code was spent
    (idp.services.retention ``take_back_unredeemed``), and it was the grant's one secret, unspent
    until now, so the grant issued nothing and never will. A grant revoked already keeps its
    reason."""
    refusal = spend_refusal(row, now, lifetime)
    if refusal is not None:
        if refusal != GRANT_REVOKED:
            write(TAKE_BACK_GRANT, {"grant": row.grant_id, "now": now, "reason": refusal})
        return None
    user = CodeUser(id=row.user_id, name=row.user_name, email=row.user_email,
                    email_verified=bool(row.user_email_verified))  # fmt: skip
    grant = CodeGrant(id=row.grant_id, user_id=row.user_id, client_id=client_id,
                      sid=row.sid, auth_time=row.auth_time, amr=tuple(row.amr or ()),
                      acr=row.acr, user=user,
                      client_restricted=bool(row.client_restricted),
                      issued_sub=row.issued_sub, issued_sid=row.issued_sid)  # fmt: skip
    return SpentCode(client_id=client_id, redirect_uri=row.redirect_uri, scope=row.scope,
                     nonce=row.nonce, code_challenge=row.code_challenge,
                     code_challenge_method=row.code_challenge_method, grant=grant)  # fmt: skip


#: Why a grant whose code was spent by an exchange then refused was taken back (RFC 6749 4.1.3,
#: 5.2 ``invalid_grant``/``invalid_request``): the code is spent and can issue nothing more, so
#: the grant would stay live with no token, ever (docs/architecture.md, "Invariants").
REFUSED_REDIRECT_URI = "exchange_refused_redirect_uri"
REFUSED_CODE_VERIFIER = "exchange_refused_code_verifier"
REFUSED_EXCHANGE = "exchange_refused"
#: A code the exchange spent and its own reads refused (``spend_refusal``): the code was its
#: grant's only secret (a grant per code, ``GrantService.new_code``), and one that could still be
#: spent had issued nothing, so the grant never will (docs/architecture.md, "Invariants").
REFUSED_EXPIRED_CODE = "exchange_refused_expired_code"
REFUSED_USER_DISABLED = "exchange_refused_user_disabled"
REFUSED_CLIENT_DISABLED = "exchange_refused_client_disabled"
#: A code whose grant was revoked before its spend: the grant keeps the reason it was given.
GRANT_REVOKED = "grant_revoked"
#: A refresh token spent, then refused (idp.oidc.code_refusals).
REFUSED_REFRESH = "refresh_refused"
#: The take-back itself, in the spend's transaction: the grant's revocation (a grant revoked
#: already, by the group check, keeps its reason).
TAKE_BACK_GRANT = (
    _GRANTS.update()
    .where(_g.id == bindparam("grant"), _g.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"), revoked_reason=bindparam("reason"))
)
