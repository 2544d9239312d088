"""What the token endpoint issues and records: the access token (RFC 9068) and the refresh token
of every grant (Authlib's token generator and ``save_token`` hook, registered by
idp.oidc.server.create_authorization_server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request
from flask import g

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import Client, DeviceAuthorization, Grant
from idp.services.crypto import new_secret
from idp.services.grants import SpentCode, record_issued_apart
from idp.services.issued_tokens import (
    IssuedAccessToken,
    record_access_token_alone,
    record_rotation_apart,
)
from idp.services.refresh_tokens import SpentRefreshToken, refresh_token_row
from idp.services.spent_codes import CodeGrant
from idp.services.subjects import Issued
from idp.services.tokens import mint_access_token, unverified_claims

ACCESS_TOKEN_ALG = "ES256"  # fast to sign and verify; RFC 9068 leaves the choice to the AS


def generate_token(
    grant_type: str,
    client: Client,
    user: Any = None,
    scope: str | None = None,
    expires_in: int | None = None,
    include_refresh_token: bool = True,
) -> dict[str, Any]:
    settings = runtime().settings
    scope = scope or ""
    ttl = expires_in or settings.access_token_ttl
    # RFC 9449 5 and 6: a request with a valid DPoP proof (idp.oidc.token_views) gets a token
    # bound to the proof's key, of type DPoP.
    jkt: str | None = g.get("dpop_jkt")
    token: dict[str, Any] = {
        "token_type": "Bearer" if jkt is None else "DPoP",
        "access_token": mint_access_token(
            # The scoped session: a Session is opened only when the keys are read again.
            db.session,
            runtime().keys,
            alg=ACCESS_TOKEN_ALG,
            issuer=settings.issuer,
            audience=settings.issuer,
            client_id=client.client_id,
            # RFC 9068 2.2: sub is the user (as the client knows them, pairwise for a pairwise
            # client: OIDC Core 8.1), or the client itself for client credentials.
            subject=(
                runtime().subjects.of(db.session, client, user.id)
                if user is not None
                else client.client_id
            ),
            scope=scope,
            ttl=ttl,
            issued_at=int(clock().now().timestamp()),
            jkt=jkt,
        ),
        "expires_in": ttl,
    }
    if scope:
        # RFC 6749 3.3: a scope is one or more scope tokens, so "" names none; RFC 6749 5.1
        # makes the member optional when the issued scope is the requested one, and a token
        # issued for no scope was asked for none (a refresh left none is refused:
        # RefreshTokenGrant).
        token["scope"] = scope
    # OIDC Core 11: refresh tokens only with offline_access (and a client allowed to use them);
    # a refresh grant's successor whatever the access token's narrower scope (RFC 6749 6), as
    # its grant decided (idp.oidc.server ``RefreshTokenGrant.issue_token``).
    if include_refresh_token and (
        grant_type == "refresh_token" or "offline_access" in scope.split()
    ):
        token["refresh_token"] = new_secret(32)
    return token


def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
    rt = runtime()
    settings = rt.settings
    now = clock().now()
    # The device flow's approved authorization stands in for the code (DeviceCodeGrant).
    code: SpentCode | DeviceAuthorization | None = getattr(request, "authorization_code", None)
    refresh: SpentRefreshToken | None = getattr(request, "refresh_token", None)
    grant = code.grant if code is not None else refresh.grant if refresh is not None else None
    access_token = token["access_token"]
    # The claims as minted (generate_token), or read back from a token made elsewhere.
    claims = getattr(access_token, "claims", None) or unverified_claims(access_token)
    issued = IssuedAccessToken(
        token=token["access_token"],
        jti=claims["jti"],
        client_id=request.client.client_id,
        grant_id=grant.id if grant is not None else None,
        user_id=grant.user_id if grant is not None else None,
        scope=token.get("scope", ""),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        now=now,
    )
    if grant is None and rt.reads is not None and not db.session.registry.has():
        # Client credentials with the client from the cache: the token is the request's only
        # write and nothing opened a Session (whose write transaction a second connection would
        # wait for on SQLite), so it is committed on its own (docs/performance.md).
        record_access_token_alone(rt.reads, issued)
        token.pop("refresh_token", None)  # RFC 6749 4.4.3
        return
    successor = None
    if grant is None:
        # Client credentials have no grant and therefore no refresh token (RFC 6749 4.4.3).
        token.pop("refresh_token", None)
    elif "refresh_token" in token:
        successor = refresh_token_row(
            token["refresh_token"], grant_id=grant.id, client_id=grant.client_id,
            # RFC 6749 6: a refresh token's successor keeps its scope (RefreshTokenGrant).
            scope=getattr(request, "refresh_token_scope", None) or token.get("scope", ""),
            ttl=settings.refresh_token_ttl, now=now,
            parent_hash=refresh.token_hash if refresh is not None else None,
            jkt=refresh_token_key(request),
        )  # fmt: skip
    given = None
    if code is not None and code.grant is not None:
        given = _subjects_given(request.client, code.grant)
    rotation = getattr(request, "rotation", None)
    if grant is not None and rotation is not None and rotation.open:
        # The transaction of the code's or the refresh token's spend, sent already
        # (idp.oidc.rotation), committed as soon as the tokens are in it: what Authlib does after
        # this hook (the ID token's claims and RS256 signature, the answer) writes nothing, and
        # on SQLite every other writer waits while the transaction is open
        # (docs/performance-rounds.md, "The thirteenth round").
        record_rotation_apart(rotation, issued, successor)
        if given is not None:
            record_issued_apart(rotation, grant.id, given)
        rotation.commit()
        return
    services().grants.record_tokens(issued, successor)
    if grant is not None and given is not None:
        services().grants.record_issued(grant.id, given)


def refresh_token_key(request: OAuth2Request) -> str | None:
    """RFC 9449 5: the DPoP key a refresh token is bound to: the proof's, for a public client
    (which has no other way to prove the token is its own); none for a confidential client, whose
    authentication does ("not required"), nor for a request without a proof."""
    return g.get("dpop_jkt") if request.auth_method == "none" else None


def _subjects_given(client: Client, grant: CodeGrant | Grant) -> Issued | None:
    """The ``sub`` and ``sid`` this response's ID token names, its access token's ``sub`` too
    (idp.oidc.server: the same client object, so the same values), when the grant does not
    record them yet: the client's subject type or sector changed since the code's issue, or a
    device grant, whose approval records none. Back-Channel Logout 1.0 2.4, 2.6: its logout
    token names them again, as the relying party keyed its session on them. A code's or a
    device grant's token response is the only one with an ID token (the refresh grant issues
    none), so these are the latest it issued."""
    given = runtime().subjects.issued(db.session, client, grant.user_id, grant.sid)
    return None if given == (grant.issued_sub, grant.issued_sid) else given
