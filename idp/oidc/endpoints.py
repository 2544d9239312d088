"""The token side's other endpoints: revocation (RFC 7009), introspection (RFC 7662) and
RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), with Authlib's hooks filled in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from flask import g
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import Client, RefreshToken
from idp.oidc.checks import MAX_STATE_LENGTH
from idp.oidc.client_auth import CLIENT_AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS, token_client
from idp.services.logout_return import return_vouched
from idp.services.signing_keys import SUPPORTED_ALGS
from idp.services.tokens import ID_TOKEN_TYP, BearerToken, find_access_token


def bearer_token(token: str) -> BearerToken | None:
    """The recorded access token behind a bearer string, live or not, on the application's clock:
    the one lookup of the userinfo, revocation and introspection endpoints."""
    rt = runtime()
    assert rt.reads is not None, "create_app sets the thin reads"
    # A thin read, no ORM Session: the request's Session opens only for a token issued before
    # the hashes were recorded (idp.services.tokens).
    return find_access_token(
        rt.reads, db.session, rt.keys, token, issuer=rt.settings.issuer, now=rt.clock.now()
    )


def _find_token(token_string: str, hint: str | None) -> BearerToken | RefreshToken | None:
    """RFC 7009 2.1 / RFC 7662 2.1: the hint only decides which store is searched first."""
    lookups = [bearer_token, _refresh_token]
    if hint == "refresh_token":
        lookups.reverse()
    for lookup in lookups:
        found = lookup(token_string)
        if found is not None:
            return found
    return None


def _refresh_token(token_string: str) -> RefreshToken | None:
    found = services().grants.find_refresh_token(token_string)
    if found is not None:
        # Authlib's endpoints ask the token whether it has expired: on the app's clock.
        found.clock = clock()
    return found


def _check_params(request: OAuth2Request) -> None:
    """The token is required; the hint is not checked. RFC 7009 2.1 and RFC 7662 2.1: the server
    MAY ignore the hint, and must search every token type when the hint finds nothing, which
    ``_find_token`` does for any hint. Authlib refused a hint it did not know with 401
    ``unsupported_token_type``, an answer RFC 6749 5.2 keeps for a client that failed to
    authenticate."""
    if "token" not in request.form:
        raise InvalidRequestError()


class TokenRevocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def check_params(self, request: OAuth2Request, client: Client) -> None:
        _check_params(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find_token(token_string, token_type_hint)

    def revoke_token(self, token: Any, request: OAuth2Request) -> None:
        service = services().grants
        if isinstance(token, RefreshToken):
            # RFC 7009 2.1: revoking a refresh token also invalidates the access tokens of the
            # same grant.
            service.revoke_grant(token.grant_id, "revoked_by_client", clock().now())
        else:
            service.revoke_access_token(token.jti, clock().now())


class TokenIntrospection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def check_params(self, request: OAuth2Request, client: Client) -> None:
        _check_params(request)

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        return _find_token(token_string, token_type_hint)

    def check_permission(self, token: Any, client: Client, request: OAuth2Request) -> bool:
        # RFC 7662 4: a client may only learn about its own tokens.
        return bool(token.client_id == client.client_id)

    def introspect_token(self, token: Any) -> dict[str, Any]:
        if isinstance(token, BearerToken):
            # Found with its grant and user in one statement: inactive once its user is disabled
            # or its grant revoked (logout, replay), as well as when revoked or expired.
            if not token.active:
                return {"active": False}
            # RFC 7662 2.2: ``token_type`` is the access token's type of RFC 6749 5.1, "Bearer"
            # as the token response says (RFC 6750); a resource server checks it to refuse
            # anything else presented as an access token.
            token_type: str | None = "Bearer" if token.jkt is None else "DPoP"
            # RFC 7662 2.2: the token's own ``sub``, the user as its client knew them when it was
            # issued (pairwise for a pairwise client, OIDC Core 8.1), or the client for client
            # credentials (RFC 9068 2.2): what the JWT says, even after a change of the client's
            # subject type or sector (idp.services.tokens).
            subject = token.subject
        else:
            # A rotated refresh token, or one whose user was disabled (this rule: a disabled user
            # gets no token, and no client may learn otherwise), or of a client no longer allowed
            # offline_access or the refresh_token grant, whose refresh tokens are refused
            # (idp.oidc.server RefreshTokenGrant; RFC 6749 5.2 unauthorized_client): RFC 7662 2.2,
            # "active" says whether the token can be used now.
            if token.consumed_at is not None or not token.grant.user.is_active:
                return {"active": False}
            client = token_client(token.client_id)
            if client is None or "offline_access" not in client.scopes:
                return {"active": False}
            if not client.check_grant_type("refresh_token"):
                return {"active": False}
            token_type = None  # a refresh token is no access token: it has no RFC 6749 5.1 type
            subject = runtime().subjects.of(db.session, client, token.grant.user_id)
        answer = {
            "active": True,
            "client_id": token.client_id,
            "sub": subject,
            "iss": runtime().settings.issuer,
            "iat": int(token.issued_at.timestamp()),
            "exp": int(token.expires_at.timestamp()),
        }
        if token_type is not None:
            answer["token_type"] = token_type
        if isinstance(token, BearerToken) and token.jkt is not None:
            # RFC 9449 6.2: a bound token's introspection names the key, so that a resource
            # server checks the proof against it; ``token_type`` is then "DPoP" (above).
            answer["cnf"] = {"jkt": token.jkt}
        if token.scope:
            # RFC 7662 2.2: "scope" is optional, a list of scope tokens (RFC 6749 3.3); a token
            # issued for no scope has none to name, not an empty one.
            answer["scope"] = token.scope
        return answer


def _hint_life() -> timedelta:
    """How long after its key's publication ended a hint is still verified: while the session
    it was issued in may live (the sessions' absolute lifetime)."""
    return timedelta(seconds=services().policy.session_absolute_ttl)


#: What the logout endpoint reads (RP-Initiated Logout 1.0 section 2, and the confirmation page's
#: proof of a validated way back, idp.services.logout_return).
LOGOUT_PARAMETERS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id",
                     "logout_hint", "ui_locales", "logout_return")  # fmt: skip


class EndSession(EndSessionEndpoint):
    """OpenID Connect RP-Initiated Logout 1.0."""

    def get_server_jwks(self) -> KeySet:
        # A hint signed by a key since unpublished still names a session that may be live.
        return runtime().keys.verification_keyset(db.session(), unpublished_within=_hint_life())

    def get_algorithms(self) -> list[str]:
        # Authlib allows every algorithm the JWKS's keys could verify (an RSA key: RS256 to
        # RS512, PS256 to PS512); idp signs ID tokens with SUPPORTED_ALGS only, and each hint's
        # key is held to its own below (``_validate_id_token_hint``).
        return list(SUPPORTED_ALGS)

    def validate_request(self, request: OAuth2Request) -> EndSessionRequest:
        # RP-Initiated Logout 1.0 section 3: the state is echoed into the post-logout Location.
        # /authorize refuses one longer than MAX_STATE_LENGTH (idp.oidc.checks); here it was
        # echoed at any length. Refused the same, as an error, which is never redirected to
        # the RP (section 4).
        if len(request.payload.data.get("state") or "") > MAX_STATE_LENGTH:
            raise InvalidRequestError(f"The state is longer than {MAX_STATE_LENGTH} characters.")
        # Each parameter once, as at the authorization endpoint (RFC 6749 3.1): Authlib reads the
        # first of a repeated one, so a request naming two hints or two redirect URIs (or a
        # state twice) was answered for whichever came first. Refused as an error, which is
        # never redirected to the RP (section 4).
        values = request.payload.data
        for name in LOGOUT_PARAMETERS:
            if len(values.getlist(name)) > 1:
                raise InvalidRequestError(f"The '{name}' parameter must appear once.")
        return super().validate_request(request)

    def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
        # RP-Initiated Logout 1.0 section 2: the hint is an ID token idp issued. Its signature
        # alone does not say so: idp signs access tokens (RFC 9068 2.1, ``at+jwt``) and logout
        # tokens (``logout+jwt``) with the same keys, and an access token reaches every resource
        # server the client calls. The header's ``typ`` tells them apart (RFC 8725 3.11).
        try:
            header = jws.extract_compact(id_token_hint.encode()).protected
        except (JoseError, ValueError, TypeError, UnicodeError):
            header = {}
        if header.get("typ") != ID_TOKEN_TYP:
            raise InvalidRequestError("The id_token_hint is not an ID token.")
        # RFC 8725 3.1: the algorithm is the one the hint's key signs with (looked up by
        # ``kid``, as idp.services.tokens.verify_issued_jwt does), never the header's choice
        # among those the key could verify; so no ``none``, HS256 or PS256 with an RS256 key.
        kid = header.get("kid")
        key = (
            runtime().keys.hint_key(db.session(), kid, unpublished_within=_hint_life())
            if isinstance(kid, str)
            else None
        )
        if key is None or header.get("alg") != key.alg:
            raise InvalidRequestError("The id_token_hint is not signed as idp signs ID tokens.")
        claims = dict(super()._validate_id_token_hint(id_token_hint))
        # Section 2: "the OP MUST validate that it was the issuer of the ID Token". Authlib checks
        # the signature only, and a key of ours does not make us its issuer: keys outlive an
        # issuer (a deployment moved to another address keeps its database, a staging copy
        # restored from it shares them), and such a token ended this browser's session without
        # asking and was redirected back. Checked as /authorize checks its hint
        # (idp.services.tokens.verify_issued_jwt).
        if claims.get("iss") != runtime().settings.issuer:
            raise InvalidRequestError("The id_token_hint was not issued by this provider.")
        return claims

    def is_post_logout_redirect_uri_legitimate(
        self, request: OAuth2Request, post_logout_redirect_uri: str, client: Any, logout_hint: Any
    ) -> bool:
        # RP-Initiated Logout 1.0 section 3: without an id_token_hint, redirect only with "other
        # means of confirming the legitimacy" of the target. idp's confirmation page (section 6)
        # carries such a means for a hint it validated (idp.services.logout_return); Authlib has
        # already checked the URI is registered for the client now. Any other hintless request
        # is not redirected.
        from idp.web.sessions import current_session

        browser_session = current_session()
        settings = runtime().settings
        return return_vouched(
            settings.secret_key,
            request.payload.data.get("logout_return"),
            client.client_id,
            post_logout_redirect_uri,
            browser_session.id_hash if browser_session else "",
            settings.pending_request_ttl,
        )

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        from idp.oidc.logout import end_browser_session

        # The view decided which session, if any, this request may end (g.idp_logout_session).
        end_browser_session(g.get("idp_logout_session"))
