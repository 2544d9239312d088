"""JWT access tokens (RFC 9068): minting and verification.

Authlib's ``JWTBearerTokenGenerator`` takes acr/amr/auth_time per *user*; ours belong to a grant
(one user signs in with different methods over time), so the JWT is assembled here and Authlib
keeps the grant flow around it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session, scoped_session

from idp.models import AccessToken, Client, Grant, User
from idp.services.crypto import new_secret, token_hash
from idp.services.signing_keys import KeyStore

if TYPE_CHECKING:
    from idp.thin_reads import ThinReads

ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 2.1
#: An ID token's ``typ`` (RFC 8725 3.11: each kind of JWT idp signs is typed apart; OIDC Core
#: names none for ID tokens, and relying parties expect "JWT").
ID_TOKEN_TYP = "JWT"
MAX_TOKEN_LENGTH = 8192


class MintedAccessToken(str):
    """An access token as minted: its compact JWS, and the claims it carries (``claims``), so that
    what records the token reads them here instead of decoding what was just encoded."""

    claims: dict[str, Any]


def mint_access_token(
    db: Session | scoped_session[Any],
    keys: KeyStore,
    *,
    alg: str,
    issuer: str,
    audience: str,
    client_id: str,
    subject: str,
    scope: str,
    ttl: int,
    issued_at: int,
    jkt: str | None = None,
) -> str:
    """``issued_at``: the application's clock (idp.clock), in seconds, the one time the token
    response's records and checks use (RFC 9068 2.2 ``iat``, ``exp``). ``jkt``: the thumbprint
    of the DPoP key the token is bound to (RFC 9449 6.1 ``cnf``), None for a bearer token."""
    now = issued_at
    key = keys.signing_key(db, alg)
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "iat": now,
        "exp": now + ttl,
        "jti": new_secret(16),
    }
    if scope:
        # RFC 9068 2.2.3 and RFC 8693 4.2: the claim is a list of one or more scope tokens (RFC
        # 6749 3.3); a token issued for none (client credentials asked for no scope) has no
        # claim, not an empty one.
        claims["scope"] = scope
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    # RFC 7515 7.1, the compact serialisation, signed by the key object itself; the claims are
    # RFC 9068 2.2's (tests/unit/test_signing_keys.py verifies such tokens with joserfc).
    signing_input = _protected_header(key.alg, ACCESS_TOKEN_TYP, key.kid) + _b64url_json(claims)
    signature = base64.urlsafe_b64encode(key.jws_signature(signing_input)).rstrip(b"=")
    minted = MintedAccessToken((signing_input + b"." + signature).decode("ascii"))
    minted.claims = claims
    return minted


@lru_cache(maxsize=64)
def _protected_header(alg: str, typ: str, kid: str) -> bytes:
    """The base64url of the JWS Protected Header and the dot after it (RFC 7515 7.1): fixed per
    key and token type, so encoded once (a key's ``kid`` is its RFC 7638 thumbprint)."""
    return _b64url_json({"alg": alg, "typ": typ, "kid": kid}) + b"."


def _b64url_json(value: dict[str, Any]) -> bytes:
    # RFC 7515 2: base64url without padding of the UTF-8 JSON; compact separators as joserfc's.
    text = json.dumps(value, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("ascii")).rstrip(b"=")


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWS as it reads, without verifying anything: the claims of a JWT
    we just minted ourselves, or the ``iss`` a client assertion claims before it is verified.
    Raises ValueError when it is no compact JWS with a JSON object as its payload."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    segment = parts[1]
    try:
        payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError as error:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        raise ValueError("the payload is not base64url JSON") from error
    if not isinstance(payload, dict):
        raise ValueError("the payload is not a JSON object")
    return payload


def verify_issued_jwt(
    db: Session,
    keys: KeyStore,
    token: str,
    *,
    issuer: str,
    typ: str | None,
    unpublished_within: timedelta | None = None,
) -> dict[str, Any] | None:
    """Claims of a JWT signed by one of our published keys with ``iss`` = us, else None. With
    ``unpublished_within``, also by a key unpublished less than that ago (``KeyStore.hint_key``).

    ``alg`` comes from our own key (looked up by ``kid``), never from the token header alone:
    ``alg: none`` and algorithm confusion are impossible (RFC 8725 3.1).
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        header = jws.extract_compact(token.encode()).protected
        kid = header.get("kid")
        if not isinstance(kid, str):
            material = None
        elif unpublished_within is not None:
            material = keys.hint_key(db, kid, unpublished_within=unpublished_within)
        else:
            material = keys.by_kid(db, kid)
        if material is None or header.get("alg") != material.alg:
            return None
        if typ is not None and header.get("typ") != typ:
            return None
        decoded = jwt.decode(token, material.private_key, algorithms=[material.alg])
    except (JoseError, ValueError, TypeError, UnicodeError):
        return None
    claims = dict(decoded.claims)
    if claims.get("iss") != issuer:
        return None
    return claims


class TokenHolder(NamedTuple):
    """The user an access token was issued to, as the claims need them (a ClaimsSubject)."""

    id: str
    name: str
    email: str
    email_verified: bool


@dataclass(slots=True)
class BearerToken:
    """A recorded access token as the bearer endpoints see it at ``now``: userinfo (OIDC Core
    5.3), introspection (RFC 7662) and revocation (RFC 7009), for which it is Authlib's token
    (``check_client``, ``get_scope``, ``is_revoked``, ``is_expired``)."""

    jti: str
    client_id: str
    scope: str
    #: The token's own ``sub`` (RFC 9068 2.2): the user as the client knew them when it was issued
    #: (pairwise for a pairwise client, OIDC Core 8.1), or the client itself for client
    #: credentials.
    subject: str
    issued_at: datetime
    expires_at: datetime
    #: The token revoked, or its grant (logout, replay, a refresh token revoked), or its user
    #: disabled: each ends the token at once (docs/security.md).
    revoked: bool
    #: None for a client-credentials token, which names no user and has no userinfo.
    holder: TokenHolder | None
    now: datetime
    #: RFC 9449 6.1: the thumbprint of the DPoP key the token is bound to (its ``cnf.jkt``), None
    #: for a bearer token.
    jkt: str | None = None

    def check_client(self, client: Client) -> bool:
        # RFC 7009 2.1 and RFC 7662 4: a client acts on and learns about its own tokens only.
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_revoked(self) -> bool:
        return self.revoked

    def is_expired(self) -> bool:
        return self.expires_at <= self.now

    @property
    def active(self) -> bool:
        return not self.revoked and self.expires_at > self.now


_TOKENS = cast(Table, AccessToken.__table__)
_GRANTS = cast(Table, Grant.__table__)
_USERS = cast(Table, User.__table__)
_CLIENTS = cast(Table, Client.__table__)

#: The token by its hash with what every bearer endpoint decides on, in one statement built once
#: and sent as a thin read (idp.thin_reads: compiled once, on the thread's connection in
#: autocommit, no ORM Session; docs/performance.md). Outer joins, so that a recorded token that
#: is no longer live is still found (and refused) without the signature path, and a
#: client-credentials token (no grant) is found.
_BY_HASH = (
    select(
        _TOKENS.c.jti,
        _TOKENS.c.client_id,
        _TOKENS.c.scope,
        _TOKENS.c.user_id,
        _TOKENS.c.issued_at,
        _TOKENS.c.expires_at,
        _TOKENS.c.revoked_at,
        _TOKENS.c.grant_id,
        _GRANTS.c.id.label("grant_found"),
        _GRANTS.c.revoked_at.label("grant_revoked_at"),
        _USERS.c.id.label("holder_id"),
        _USERS.c.disabled_at,
        _USERS.c.name,
        _USERS.c.email,
        _USERS.c.email_verified,
        # The registration as stored, not the token side's cached copy: a token of a client
        # disabled on another node within its cache's TTL is refused here all the same.
        _CLIENTS.c.disabled_at.label("client_disabled_at"),
    )
    .select_from(
        _TOKENS.outerjoin(_GRANTS, _GRANTS.c.id == _TOKENS.c.grant_id)
        .outerjoin(_USERS, _USERS.c.id == _GRANTS.c.user_id)
        .outerjoin(_CLIENTS, _CLIENTS.c.client_id == _TOKENS.c.client_id)
    )
    .where(_TOKENS.c.token_hash == bindparam("digest"))
)


def find_access_token(
    reads: ThinReads,
    db: Callable[[], Session],
    keys: KeyStore,
    token: str,
    *,
    issuer: str,
    now: datetime,
) -> BearerToken | None:
    """The recorded access token behind a bearer string, live or not (``BearerToken.active``).

    Found by the SHA-256 of the whole string: idp issued it and recorded its hash, so finding the
    hash proves the token without verifying its signature (nobody can make a string with a
    recorded hash without holding the token). A string whose hash was never recorded is
    accepted only as a token issued before the hashes were (migration 0014): by its verified
    signature, and only when its row has no hash, so that no other string with a valid
    signature (a second signature over the same claims) stands for a recorded token.

    The lookup is one committed read, which is all the bearer endpoints decide on (a revocation,
    a logout or a disabled user is committed before it is answered), so it needs no ORM Session;
    ``db`` opens the request's Session only for a token issued before the hashes."""
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    row = reads.first(_BY_HASH, {"digest": token_hash(token)})
    if row is None:
        return _issued_before_hashes(db(), keys, token, issuer=issuer, now=now)
    grant_gone = row.grant_id is not None and row.grant_found is None
    user_gone = row.grant_found is not None and row.holder_id is None
    # Its recorded hash proves the string is the token idp minted: its claims are idp's.
    claims = unverified_claims(token)
    return BearerToken(
        jti=row.jti,
        client_id=row.client_id,
        scope=row.scope,
        subject=_own_subject(claims, row.user_id or row.client_id),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        revoked=(
            row.revoked_at is not None
            or row.grant_revoked_at is not None
            or row.disabled_at is not None
            or row.client_disabled_at is not None
            or grant_gone
            or user_gone
        ),
        holder=(
            TokenHolder(row.holder_id, row.name, row.email, row.email_verified)
            if row.holder_id is not None
            else None
        ),
        now=now,
        jkt=confirmed_key(claims),
    )


def confirmed_key(claims: dict[str, Any]) -> str | None:
    """RFC 9449 6.1: the ``jkt`` of the token's ``cnf`` claim, None for a token bound to no key.
    Only idp mints the tokens it reads this of (its recorded hash or its signature proves it)."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None


def _issued_before_hashes(
    db: Session, keys: KeyStore, token: str, *, issuer: str, now: datetime
) -> BearerToken | None:
    claims = verify_issued_jwt(db, keys, token, issuer=issuer, typ=ACCESS_TOKEN_TYP)
    jti = claims.get("jti") if claims is not None else None
    if not isinstance(jti, str):
        return None
    row = db.get(AccessToken, jti)
    if row is None or row.token_hash is not None:
        return None
    grant = row.grant
    user = grant.user if grant is not None else None
    return BearerToken(
        jti=row.jti,
        client_id=row.client_id,
        scope=row.scope,
        subject=_own_subject(claims or {}, row.user_id or row.client_id),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        revoked=row.is_revoked() or (user is not None and not user.is_active),
        holder=(
            TokenHolder(user.id, user.name, user.email, user.email_verified)
            if user is not None
            else None
        ),
        now=now,
    )


def _own_subject(claims: dict[str, Any], recorded: str) -> str:
    """The ``sub`` the token carries, which introspection (RFC 7662 2.2: the token's subject) and
    userinfo (OIDC Core 5.3.2: the ``sub`` of the ID token issued with it) report: a change of
    the client's subject type or sector since (docs/admins.md) changes the ``sub`` of the tokens
    issued after it, never of one already issued. ``recorded`` (the user's or the client's id)
    for a token without one, which idp never minted."""
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else recorded
