"""JWT access tokens (RFC 9068): minting and verification.

Authlib's ``JWTBearerTokenGenerator`` takes acr/amr/auth_time per *user*; ours belong to a grant
(one user signs in with different methods over time), so the JWT is assembled here and Authlib
keeps the grant flow around it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from sqlalchemy.orm import Session

from idp.models import AccessToken
from idp.services.crypto import new_secret
from idp.services.grants import GrantService
from idp.services.signing_keys import KeyStore

ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 2.1
MAX_TOKEN_LENGTH = 8192


def mint_access_token(
    db: Session,
    keys: KeyStore,
    *,
    alg: str,
    issuer: str,
    audience: str,
    client_id: str,
    subject: str,
    scope: str,
    ttl: int,
) -> str:
    now = int(time.time())
    key = keys.signing_key(db, alg)
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": new_secret(16),
    }
    header = {"alg": alg, "typ": ACCESS_TOKEN_TYP, "kid": key.kid}
    return jwt.encode(header, claims, key.private_key, algorithms=[alg])


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT we just minted ourselves (no verification needed or done)."""
    payload = json.loads(jws.extract_compact(token.encode()).payload)
    assert isinstance(payload, dict)
    return payload


def verify_issued_jwt(
    db: Session, keys: KeyStore, token: str, *, issuer: str, typ: str | None
) -> dict[str, Any] | None:
    """Claims of a JWT signed by one of our published keys with ``iss`` = us, else None.

    ``alg`` comes from our own key (looked up by ``kid``), never from the token header alone:
    ``alg: none`` and algorithm confusion are impossible (RFC 8725 3.1).
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    try:
        header = jws.extract_compact(token.encode()).protected
        kid = header.get("kid")
        material = keys.by_kid(db, kid) if isinstance(kid, str) else None
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


def verify_access_token(
    db: Session, keys: KeyStore, token: str, *, issuer: str, now: datetime
) -> AccessToken | None:
    """The live access token behind a bearer string: signature, issuer, expiry, and the
    server-side record (revocation, logout, disabled user)."""
    claims = verify_issued_jwt(db, keys, token, issuer=issuer, typ=ACCESS_TOKEN_TYP)
    if claims is None:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int) or datetime.fromtimestamp(exp, UTC) <= now:
        return None
    jti = claims.get("jti")
    if not isinstance(jti, str):
        return None
    return GrantService(db).active_access_token(jti, now)
