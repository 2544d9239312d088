"""Authlib wiring: the token side of the OpenID Provider.

Authlib runs the grant flows, client authentication and the RFC 7009 / 7662 / RP-initiated logout
endpoints; every storage hook and every permissive default is ours: PKCE is S256-only,
codes and refresh tokens are spent through the consume-once primitive, and a replay revokes the
grant. This module holds the grants and assembles the server; client authentication is in
``idp.oidc.client_auth``, the revocation, introspection and logout endpoints in
``idp.oidc.endpoints``, what the token endpoint issues and records in ``idp.oidc.token_issue``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InsecureTransportError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from flask import Flask, g
from flask import request as current_request

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import Client, DeviceAuthorization
from idp.oidc.checks import CODE_CHALLENGE
from idp.oidc.client_auth import (
    CLIENT_AUTH_METHODS,
    CONFIDENTIAL_AUTH_METHODS,
    PrivateKeyJWT,
    RealmedInvalidClientError,
    authenticate_client_secret_basic,
    claimed_client_id,
    mixed_authentication_refusal,
    registered_method_refusal,
    token_client,
)
from idp.oidc.code_refusals import check_redirect_uri, refused_as, take_back
from idp.oidc.device_grant import DeviceAuthorizationEndpoint, DeviceCodeGrant
from idp.oidc.dpop import DPoPProofRequiredError, token_side_proof
from idp.oidc.endpoints import EndSession, TokenIntrospection, TokenRevocation
from idp.oidc.group_gate import still_allowed
from idp.oidc.pushed import PushedAuthorizationEndpoint
from idp.oidc.rotation import in_rotation, redeem, redeem_code
from idp.oidc.token_issue import generate_token, save_token
from idp.oidc.token_request import (
    BODY_PARAMETER_ENDPOINTS,
    PARAMETERS_CHECKED,
    TokenSideRequest,
    parameters_refusal,
)
from idp.services import audit
from idp.services.claims import client_claims
from idp.services.refresh_tokens import SpentRefreshToken, scope_of_refresh_token
from idp.services.signing_keys import KeyMaterial
from idp.services.spent_codes import REFUSED_CODE_VERIFIER, REFUSED_REFRESH, SpentCode
from idp.services.tokens import ID_TOKEN_TYP
from idp.session_statements import statements_of
from idp.web.answers import Answer

log = logging.getLogger(__name__)


class S256CodeChallenge(CodeChallenge):
    """RFC 7636 with RFC 9700 2.1.1: ``plain`` is never accepted. The authorization endpoint only
    stores S256 challenges; this also refuses a verifier without a challenge (downgrade)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        # After the code's spend: a refusal takes its grant back (idp.oidc.code_refusals).
        with refused_as(grant.request, REFUSED_CODE_VERIFIER):
            super().validate_code_verifier(grant, result)


class OpenIDCodeWithSession(OpenIDCode):
    """ID tokens per OIDC Core 2 and 3.1.3.6, signed with the client's registered alg."""

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False  # nonce replay is the RP's check (OIDC Core 3.1.3.7 step 11)

    def _id_token_key(self, client: Client) -> KeyMaterial:
        """The key of this request's ID token, looked up once: Authlib asks for the header and
        for the private key separately, and a rotation (a cache reload) between the two would
        otherwise name one key in ``kid`` and sign with another (RFC 7515 4.1.4)."""
        alg = self.get_client_algorithm(client)
        chosen: dict[str, KeyMaterial] = g.setdefault("id_token_keys", {})
        if alg not in chosen:
            # The scoped session: a Session is opened only when the keys are read again.
            chosen[alg] = runtime().keys.signing_key(db.session, alg)
        return chosen[alg]

    def resolve_client_private_key(self, client: Client) -> Any:
        return self._id_token_key(client).private_key

    def get_encode_header(self, client: Client) -> dict[str, str]:
        return {"alg": self.get_client_algorithm(client), "typ": ID_TOKEN_TYP,
                "kid": self._id_token_key(client).kid}  # fmt: skip

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        settings = runtime().settings
        # OIDC Core 2 ``iat``/``exp`` on the application's clock (idp.clock), as the access
        # token's and the sign-in's ``auth_time``: a test's frozen clock sees one time.
        now = int(clock().now().timestamp())
        return {
            "iss": settings.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + settings.id_token_ttl,
        }

    def get_authorization_code_claims(
        self, authorization_code: SpentCode | DeviceAuthorization
    ) -> Any:
        claims = super().get_authorization_code_claims(authorization_code)
        grant = authorization_code.grant
        if grant is not None and grant.sid:
            # OIDC Back-Channel Logout 2.1; a pairwise client's own (idp.services.subjects).
            claims["sid"] = runtime().subjects.session_id_of(db.session, g.id_token_client,
                                                             grant.sid)  # fmt: skip
        return claims

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> Any:
        # Authlib hands ``generate_user_info`` the user and scope only; the claims of groups and
        # claim maps depend on the client too. This extension serves every request, so the
        # client is kept per request, not on ``self``.
        g.id_token_client = request.client
        return super().encode_id_token(token, request)

    def generate_user_info(self, user: Any, scope: str) -> UserInfo:
        client = g.id_token_client
        client_id = client.client_id
        # Read by idp.oidc.group_gate.still_allowed in this request (this user, this client).
        kept = g.get("group_claims")
        found = kept[2] if kept and kept[:2] == (user.id, client_id) else None
        # OIDC Core 8: the client's own ``sub`` for the user, pairwise for a pairwise client.
        subject = runtime().subjects.of(db.session, client, user.id)
        return UserInfo(client_claims(db.session, user, client_id, scope, found, subject))


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def validate_token_request(self) -> None:
        """Nothing yet: the whole request is validated in ``create_token_response``, so that the
        code's spend and the tokens it issues share one transaction (idp.oidc.rotation)."""

    def create_token_response(self) -> Any:
        return in_rotation(self.request, self._redeem)

    def _redeem(self) -> Any:
        try:
            super().validate_token_request()  # Authlib's checks and hooks (PKCE, RFC 7636 4.6)
            return super().create_token_response()
        except OAuth2Error:
            # A refusal after the code's spend takes its grant back (idp.oidc.code_refusals).
            take_back(self.request)
            raise

    def query_authorization_code(self, code: str, client: Client) -> SpentCode | None:
        if not self.request.payload.redirect_uri:
            # RFC 6749 4.1.3, OIDC Core 3.1.3.1: required, since every authorization request to
            # idp names one (idp.oidc.checks.check_redirect_uri); a missing required parameter is
            # invalid_request (RFC 6749 5.2), refused before the code is spent, as a missing code
            # is (Authlib compared it after the spend: invalid_grant, and the corrected request
            # a replay that revoked the grant). Sent without a value counts as omitted (3.2).
            raise InvalidRequestError("The 'redirect_uri' parameter is missing.")
        verifier = self.request.form.get("code_verifier") or ""
        if verifier and not CODE_CHALLENGE.fullmatch(verifier):
            # RFC 7636 4.1: 43-128 unreserved characters; malformed is invalid_request whatever
            # the code holds, so refused before the spend (Authlib's pattern, checked after it,
            # took one ending in a line break).
            raise InvalidRequestError("The 'code_verifier' is malformed.")
        if not verifier and self.request.auth_method == "none":
            # A public client's codes always carry a challenge (idp.oidc.checks.check_pkce,
            # RFC 9700 2.1.1): a missing verifier is invalid_request (RFC 7636 4.5, RFC 6749
            # 5.2) before the spend. A wrong one still spends the code (S256CodeChallenge).
            raise InvalidRequestError("The 'code_verifier' parameter is missing.")
        # Spent here, atomically, before any other check: a replay revokes the grant.
        # RFC 9449 10: a code bound to a DPoP key needs this request's proof of it.
        row = redeem_code(self.request, code, client, clock().now(), g.get("dpop_jkt"))
        if row is None or not still_allowed(
            row.grant, client, restricted_as_stored=row.grant.client_restricted,
            request=self.request,
        ):  # fmt: skip
            return None
        check_redirect_uri(self.request, row)  # RFC 6749 4.1.3, remembering the spend
        # RFC 6749 3.3: a scope an admin took from the client after the code was issued is not
        # granted by it (the token response, the ID token's claims, userinfo's and the refresh
        # token's grant follow this scope), as the refresh grant narrows (``issue_token``).
        scope = client.get_allowed_scope(row.scope)
        return row if scope == row.scope else replace(row, scope=scope)

    def delete_authorization_code(self, authorization_code: SpentCode) -> None:
        """Nothing to do: the code was consumed when it was looked up."""

    def authenticate_user(self, authorization_code: SpentCode) -> Any:
        return authorization_code.grant.user

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        raise NotImplementedError("codes are issued by idp.oidc.views, not by Authlib")


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """RFC 6749 6 with rotation, sent apart from the ``Session`` when it can be
    (idp.oidc.rotation)."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True  # RFC 9700 4.14.2: rotate on every use

    def validate_token_request(self) -> None:
        # The client only: the refresh token is spent in create_token_response, in the
        # transaction that records its successor.
        self.request.client = self._validate_request_client()

    def create_token_response(self) -> Any:
        return in_rotation(self.request, self._rotate)

    def _rotate(self) -> Any:
        try:
            return self._rotated()
        except OAuth2Error:
            # A refusal after the refresh token's spend takes its grant back
            # (idp.oidc.code_refusals): the spent token can issue nothing more.
            take_back(self.request, REFUSED_REFRESH)
            raise

    def _rotated(self) -> Any:
        client = self.request.client
        if "offline_access" not in client.scopes:
            # OIDC Core 11: a refresh token is the client's offline access; once an admin takes
            # that scope from the client, its refresh tokens issue nothing (and stay unspent,
            # should the scope be given back).
            raise InvalidGrantError("The client may no longer use refresh tokens.")
        requested = self.request.payload.scope
        if requested:
            if not client.get_allowed_scope(requested):
                # RFC 6749 3.3: a scope is one or more scope tokens, and 5.1 requires the answer
                # to name the issued scope when it differs from the requested one. None of the
                # requested left to the client (or none requested, only spaces) would issue a
                # token for no scope, which no value names: invalid_scope (RFC 6749 5.2), as at
                # the authorization endpoint, refused before the token is spent.
                raise InvalidScopeError("No requested scope is allowed for this client.")
            # RFC 6749 6: a scope wider than the grant's is refused before the token is spent;
            # a refused request issues no successor, so it must leave the token usable (else the
            # client's next, correct, request would look like a replay and revoke the grant).
            reads = runtime().reads
            original = scope_of_refresh_token(
                reads if reads is not None else statements_of(db.session),
                self.request.form.get("refresh_token") or "", client.client_id,
            )  # fmt: skip
            if original is not None and not set(requested.split()) <= set(original.split()):
                raise InvalidScopeError()
        refresh_token = self._validate_request_token(client)
        self._validate_token_scope(refresh_token)
        self.request.refresh_token = refresh_token
        return super().create_token_response()

    def issue_token(self, user: Any, refresh_token: SpentRefreshToken) -> dict[str, Any]:
        """RFC 6749 6: the access token has the requested scope (no wider than the grant's, checked
        above) or the grant's; the successor refresh token the spent one's scope, identical
        whatever the request narrowed. Both lose what an admin has since taken from the client
        (RFC 6749 3.3: the issued scope may differ from the requested; the answer names it)."""
        client = self.request.client
        granted = client.get_allowed_scope(refresh_token.get_scope())
        requested = self.request.payload.scope
        scope = client.get_allowed_scope(requested) if requested else granted
        self.request.refresh_token_scope = granted
        return self.generate_token(user=user, scope=scope, include_refresh_token=True)

    def authenticate_refresh_token(self, refresh_token: str) -> SpentRefreshToken | None:
        client = self.request.client
        client_id = client.client_id
        grace = timedelta(seconds=runtime().settings.refresh_token_retry_grace)
        # RFC 9449 5: a token bound to a DPoP key needs this request's proof of it.
        redemption = redeem(self.request, refresh_token, clock().now(), grace, g.get("dpop_jkt"))
        token = redemption.token
        if token is None or not still_allowed(
            token.grant, client, restricted_as_stored=token.grant.client_restricted,
            request=self.request, issued_before=True,
        ):  # fmt: skip
            return None
        if redemption.retried:
            # Audited: a retry is answered instead of revoking the grant (RFC 9700 4.14.2
            # reasoning in GrantService.redeem_refresh_token), and an admin may want to see how
            # often clients lose answers.
            audit.record(
                db.session(), "token.refresh_retried", subject_id=token.grant.user_id,
                client_id=client_id, context=services().context,
            )  # fmt: skip
        return token

    def authenticate_user(self, refresh_token: SpentRefreshToken) -> Any:
        return refresh_token.grant.user

    def revoke_old_credential(self, refresh_token: SpentRefreshToken) -> None:
        """Nothing to do: the refresh token was consumed when it was looked up."""


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        # RFC 6749 3.3 / 4.4.2: only scopes the client is registered for. Authlib would otherwise
        # mint whatever scope string the client sends into the access token.
        scope = self.request.payload.scope
        requested = set((scope or "").split())
        if not requested <= set(self.request.client.scopes):
            raise InvalidScopeError("The client is not registered for the requested scope.")
        if scope and not requested:
            # RFC 6749 3.3: a scope is one or more scope tokens separated by spaces; spaces alone
            # are a malformed scope (5.2 invalid_scope), which was issued as the token's scope.
            # An empty value is no scope at all (RFC 6749 3.2: a parameter without a value is
            # treated as omitted).
            raise InvalidScopeError("The scope names no scope token.")

    def generate_token(
        self, user: Any = None, scope: str | None = None, grant_type: str | None = None,
        expires_in: int | None = None, include_refresh_token: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        # RFC 6749 3.3: scope tokens separated by single spaces, as every other grant issues them
        # (the client's get_allowed_scope). Authlib passes the request's string as it came, so
        # repeated tokens, tabs and runs of spaces went into the answer, the access token's
        # claim (RFC 9068 2.2.3) and its record, whose column a long one overflowed (a 500 on
        # PostgreSQL). Validated above: every token named is the client's.
        return super().generate_token(
            user=user, scope=self.request.client.get_allowed_scope(scope or ""),
            grant_type=grant_type, expires_in=expires_in,
            include_refresh_token=include_refresh_token,
        )  # fmt: skip


class IdpAuthorizationServer(AuthorizationServer):
    #: Whether the issuer is https (``create_authorization_server``).
    https_issuer = False

    def create_oauth2_request(self, request: Any) -> TokenSideRequest:
        # The request the direct endpoints hand over (idp.web.direct), else Flask's own.
        if request is None:
            request = current_request._get_current_object()  # type: ignore[attr-defined]
        return TokenSideRequest(request, https_issuer=self.https_issuer)

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Answer:
        # A plain answer: the direct endpoints (idp.web.direct) write it to WSGI as it is, without
        # a Werkzeug response object in between; a Flask view turns it into one.
        return Answer.of(status_code, payload, headers)

    def create_token_response(self, request: Any = None) -> Any:
        if request is None:
            request = current_request._get_current_object()  # type: ignore[attr-defined]
        # RFC 6749 2.3.1, 3.2: the parameters in the body only, each once; refused before the
        # client authenticates or anything is read or spent; a DPoP request's, before its proof.
        refusal = None if PARAMETERS_CHECKED in request.environ else parameters_refusal(request)
        if refusal is not None:
            return self.handle_error_response(None, refusal)
        # RFC 6749 3.2: the token endpoint requires TLS. Authlib checks it while it builds its
        # request, before the part of its create_token_response that turns an OAuth error into
        # RFC 6749 5.2's answer, so a plain-http request to another host than loopback was a 500.
        # The same for a request without grant_type (get_token_grant).
        try:
            return super().create_token_response(request)
        except (InsecureTransportError, InvalidRequestError) as error:
            return self.handle_error_response(None, error)

    def create_endpoint_response(self, name: str, request: Any = None) -> Any:
        if name in BODY_PARAMETER_ENDPOINTS:
            if request is None:
                request = current_request._get_current_object()  # type: ignore[attr-defined]
            # As at the token endpoint (``create_token_response``): RFC 7009 2.1, RFC 7662 2.1,
            # RFC 8628 3.1 and RFC 9126 2.1 put the parameters in the body, each once.
            refusal = None if PARAMETERS_CHECKED in request.environ else parameters_refusal(request)
            if refusal is not None:
                return self.handle_error_response(None, refusal)
        return super().create_endpoint_response(name, request)

    def get_token_grant(self, request: OAuth2Request) -> Any:
        if not request.payload.grant_type:
            # RFC 6749 5.2: a request "missing a required parameter" is invalid_request, and
            # grant_type is required (4.1.3, 4.4.2, 6; one sent without a value counts as
            # omitted, 3.2). Authlib answered unsupported_grant_type, which is for a grant type
            # named and not supported.
            raise InvalidRequestError("The 'grant_type' parameter is missing.")
        return super().get_token_grant(request)

    def authenticate_client(self, request: OAuth2Request, methods: Any, endpoint: str = "token"
                            ) -> Any:  # fmt: skip
        # A proof the token or PAR view checked came after its request's one method and one
        # client were (idp.oidc.token_request ``proof_request_refusal``).
        proof = g.pop("dpop_proof", None)
        refusal = None if proof is not None else mixed_authentication_refusal(request)
        if refusal is not None:  # RFC 6749 2.3, 3.2.1: one client, one method
            raise InvalidRequestError(refusal)
        try:
            client = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            claimed = claimed_client_id(request)
            client = token_client(claimed) if claimed else None
            description = error.description or ""
            if client is not None:
                description = registered_method_refusal(client, description)
            raise RealmedInvalidClientError(
                description=description, status_code=error.status_code
            ) from None
        if proof is not None:
            # The proof the token or PAR endpoint checked (idp.oidc.token_views ``_proved``),
            # spent only now that its client authenticated, and before the grant runs (RFC 9449
            # 11.1): a request that authenticates nobody records nothing (idp.oidc.dpop).
            g.dpop_jkt = token_side_proof(proof, client)
        elif endpoint == "token" and client.dpop_bound_access_tokens and "dpop_jkt" not in g:
            # RFC 9449 5.2: the client registered that it always uses DPoP; a token request
            # without a proof is refused before any grant runs (a code stays unspent), so none
            # of its access tokens is a bearer token.
            raise DPoPProofRequiredError()
        return client


def create_authorization_server(app: Flask) -> AuthorizationServer:
    server = IdpAuthorizationServer(app, query_client=token_client, save_token=save_token)
    # The issuer's scheme, once: read for every token-side request (TokenSideRequest).
    server.https_issuer = app.extensions["idp"].settings.secure_transport
    server.register_token_generator("default", generate_token)
    server.register_grant(
        AuthorizationCodeGrant,
        [S256CodeChallenge(required=True), OpenIDCodeWithSession(require_nonce=False)],
    )
    server.register_grant(RefreshTokenGrant)
    server.register_grant(DeviceCodeGrant, [OpenIDCodeWithSession(require_nonce=False)])
    server.register_grant(ClientCredentialsGrant)
    server.register_client_auth_method("client_secret_basic", authenticate_client_secret_basic)
    server.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT())
    server.register_endpoint(TokenRevocation)
    server.register_endpoint(TokenIntrospection)
    server.register_endpoint(EndSession)
    server.register_endpoint(DeviceAuthorizationEndpoint)
    server.register_endpoint(PushedAuthorizationEndpoint)
    return server
