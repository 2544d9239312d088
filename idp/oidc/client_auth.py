"""Client authentication at the token side (RFC 6749 2.3.1, RFC 7523 2.2, OIDC Core 9): the
methods Authlib runs with idp's own bounds, and the error that names the method a client is
registered with."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from idp.composition import runtime
from idp.extensions import db
from idp.models import (
    Client,
    UsedClientAssertion,
)
from idp.oidc.errors import error_description
from idp.services.client_assertions import audience_refusal
from idp.services.crypto import token_hash
from idp.services.tokens import unverified_claims


def token_client(client_id: str) -> Client | None:
    """The client at the token side (Authlib's ``query_client``: the token, device
    authorization, revocation, introspection and logout endpoints): this process's cached copy
    of the registration (idp.services.client_cache: a change counts at once in the process that
    made it, elsewhere within ``client_cache_ttl``). A disabled client is none."""
    if not client_id or len(client_id) > 64:
        return None
    # The scoped session: a cached registration opens no Session (introspection's only other
    # read is a thin one, idp.thin_reads).
    client = runtime().client_cache.get(db.session, client_id)
    if client is None or client.disabled_at is not None:
        return None
    return client


CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


#: The algorithms a ``private_key_jwt`` assertion may be signed with, as discovery advertises
#: them (``token_endpoint_auth_signing_alg_values_supported`` and the revocation and
#: introspection endpoints' own, RFC 8414 2).
CLIENT_ASSERTION_ALGS = ("RS256", "ES256", "EdDSA")


class PrivateKeyJWT(JWTBearerClientAssertion):
    """RFC 7523 2.2 / OIDC Core 9 ``private_key_jwt``."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # Authlib's decodes with joserfc's recommended algorithms only (RS256, ES256, HS256):
        # an EdDSA assertion, advertised and registered, was refused. Only the advertised ones,
        # and never a MAC with a public key.
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(CLIENT_ASSERTION_ALGS))
        except JoseError as error:
            # RFC 6749 5.2: the message may quote the assertion's header (its kid, crit, alg).
            description = error_description(error.description or "")
            raise InvalidClientError(description=description) from error
        settings = runtime().settings
        # draft-ietf-oauth-rfc7523bis 4 (RFC 7523 3 item 3): the issuer identifier as the sole
        # audience; the endpoint URLs only while the operator lets clients migrate
        # (idp.services.client_assertions: why a token endpoint audience can be injected).
        refusal = audience_refusal(
            token.claims.get("aud"),
            token.header.get("typ"),
            settings.issuer,
            self.get_audiences(),
            settings.client_assertion_endpoint_audiences,
        )
        if refusal is not None:
            raise InvalidClientError(description=refusal)
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        # Authlib's check that ``aud`` contains one of these runs after ``audience_refusal``,
        # which has already required the issuer alone unless the endpoints are allowed. RFC
        # 8628 3.1: the device authorization endpoint authenticates clients as the token
        # endpoint does, so a client migrating may name either; RFC 9126 2 lists the PAR
        # endpoint's URL too.
        settings = runtime().settings
        return [
            settings.endpoint("/token"),
            settings.endpoint("/device_authorization"),
            settings.endpoint("/par"),
            settings.issuer,
        ]

    def verify_claims(self, claims: Any) -> None:
        refusal = assertion_time_refusal(claims, int(time.time()), self.leeway)
        if refusal is not None:
            raise InvalidClientError(description=refusal)
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: str) -> bool:
        # RFC 7523 3 "jti": the record must outlive every moment the assertion is accepted, its
        # expiry plus the clock-skew leeway (``exp`` is an integer: ``verify_claims``).
        expires_at = datetime.fromtimestamp(claims["exp"] + self.leeway, UTC)
        try:
            with db.session.begin_nested():
                db.session.add(UsedClientAssertion(jti_hash=token_hash(jti), expires_at=expires_at))
        except IntegrityError:
            return False
        return True

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if not (client.jwks and client.jwks.get("keys")):
            # RFC 7523 3 / RFC 6749 5.2: a client without registered keys cannot present an
            # assertion; that is invalid_client, not a server error.
            raise InvalidClientError(description="The client has no registered keys.")
        return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]


#: The longest a client assertion may be valid: RFC 7523 3 asks the server to limit how long
#: it must remember ``jti`` values, and OIDC Core 9 expects a short lifetime. One hour, not a few
#: minutes: Authlib's client (``authlib.oauth2.rfc7523``) signs its assertions for exactly an hour
#: by default, and a bound below what a widely used relying-party library sends would refuse it
#: out of the box. The jti record lives until ``exp`` (``validate_jti``), so the bound is what
#: caps the replay store.
MAX_CLIENT_ASSERTION_LIFETIME = 3600


def _numeric_date(value: object) -> bool:
    """An integer NumericDate (RFC 7519 2). JSON ``true`` is no date, a float is refused: idp
    stores and compares whole seconds (and an assertion's clock is never that precise)."""
    return isinstance(value, int) and not isinstance(value, bool)


def assertion_time_refusal(claims: dict[str, Any], now: int, leeway: int) -> str | None:
    """Why a client assertion's time claims are refused, or None (RFC 7523 3 items 4-6)."""
    if not _numeric_date(claims.get("exp")):
        return "The assertion's 'exp' must be an integer NumericDate."
    for name in ("iat", "nbf"):
        if name in claims and not _numeric_date(claims[name]):
            return f"The assertion's '{name}' must be an integer NumericDate."
    exp: int = claims["exp"]
    # Measured from when it was issued and from now (an ``iat`` in the future is the client's
    # claim, not a fact): either way no longer than the limit (plus the clock-skew leeway).
    issued = claims.get("iat", now)
    if exp - issued > MAX_CLIENT_ASSERTION_LIFETIME or exp - now > (
        MAX_CLIENT_ASSERTION_LIFETIME + leeway
    ):
        return f"The assertion is valid for more than {MAX_CLIENT_ASSERTION_LIFETIME} seconds."
    return None


def authenticate_client_secret_basic(query_client: Any, request: OAuth2Request) -> Any:
    """RFC 6749 2.3.1 ``client_secret_basic``, as Authlib's, reading the header once (Authlib's
    is wrapped here for its parser: calling it parsed the header a second time). Authlib's parser
    raises on ``Basic`` with no credentials or with credentials that are not UTF-8, which
    surfaced as a 500; such a header is simply no valid client authentication (RFC 6749 5.2
    ``invalid_client``)."""
    try:
        client_id, client_secret = extract_basic_authorization(request.headers)
    except ValueError:  # UnicodeDecodeError included
        return None
    if not (client_id and client_secret):
        return None
    client = query_client(client_id)
    if client is None:
        # RFC 6749 5.2: a client that tried the Authorization header is answered 401.
        raise InvalidClientError(
            status_code=401, description="The client does not exist on this server."
        )
    return client if client.check_client_secret(client_secret) else None


def presented_secret(request: OAuth2Request) -> str:
    """The client secret a request authenticated with (``client_secret_basic``'s header or
    ``client_secret_post``'s body, RFC 6749 2.3.1; one method per request,
    ``mixed_authentication_refusal``), or "" for another method."""
    try:
        _client_id, secret = extract_basic_authorization(request.headers)
    except ValueError:  # UnicodeDecodeError included
        secret = None
    return str(secret or request.form.get("client_secret") or "")


#: How a client presents each registration's method at the token endpoint, for the error that
#: names it (OIDC Core 9, RFC 6749 2.3.1, RFC 7523 2.2).
AUTH_METHOD_HOW = {
    "client_secret_basic": "its client_id and secret in an HTTP Basic Authorization header",
    "client_secret_post": "client_id and client_secret in the form body",
    "private_key_jwt": "a client_assertion JWT signed with its registered key",
    "none": "its client_id alone, as a public client with PKCE",
}
#: Authlib's description of a failed client authentication, which lists every method it tried.
_GENERIC_CLIENT_AUTH_FAILURE = "The client cannot authenticate with methods"


def claimed_client_id(request: OAuth2Request) -> str | None:
    """The client a failed authentication claims to be: from the Basic header, the form's
    client_id, or a client assertion's unverified ``iss`` (RFC 7523 3 item 1)."""
    try:
        basic_id, _secret = extract_basic_authorization(request.headers)
    except ValueError:  # UnicodeDecodeError included
        basic_id = None
    if basic_id:
        return str(basic_id)
    form_id = request.form.get("client_id")
    if form_id:
        return str(form_id)
    assertion = request.form.get("client_assertion")
    if assertion:
        try:
            issuer = unverified_claims(str(assertion)).get("iss")
        except Exception:
            return None
        return issuer if isinstance(issuer, str) else None
    return None


#: The body parameters that name a client or carry its credentials.
_NAMING_PARAMETERS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")


def mixed_authentication_refusal(request: OAuth2Request | Request) -> str | None:
    """Why a token-side request is refused before any client authenticates, or None: RFC 6749
    2.3 "the client MUST NOT use more than one authentication method in each request", and a
    request names one client (RFC 6749 3.2.1: ``client_id`` beside Basic identifies the same
    client; RFC 7521 4.2: beside an assertion, it "MUST identify the same client"). Authlib tries
    one method after another and takes the first that succeeds, ignoring the rest: Basic as one
    client with ``client_id`` naming another redeemed the first client's code. RFC 6749 5.2
    names this ``invalid_request`` ("utilizes more than one mechanism for authenticating the
    client, or is otherwise malformed"), not ``invalid_client``: no authentication failed."""
    authorization = str(request.headers.get("Authorization") or "")
    basic = authorization[:6].lower() == "basic "
    # Membership first: Werkzeug's MultiDict.get of a missing key raises and catches a
    # KeyError, and most of these are missing from most requests.
    form = request.form
    sent = {name: form[name] for name in _NAMING_PARAMETERS if name in form}
    assertion = sent.get("client_assertion")
    methods = [basic, bool(sent.get("client_secret")),
               bool(assertion or sent.get("client_assertion_type"))]  # fmt: skip
    if sum(methods) > 1:
        return "The client must use one authentication method per request."
    body_id = sent.get("client_id")
    if not body_id or not (basic or assertion):
        # One name at most (the usual request: Basic alone, or client_id with its secret or
        # none): nothing to compare, and no second decoding of the credentials.
        return None
    try:
        basic_id = extract_basic_authorization(request.headers)[0] if basic else None
    except ValueError:  # UnicodeDecodeError included: Basic still was the method tried
        basic_id = None
    named = {str(body_id)} | {str(basic_id or "")}
    if assertion:
        try:
            subject = unverified_claims(str(assertion)).get("sub")
        except Exception:  # a malformed assertion is the method's own refusal (invalid_client)
            subject = None
        named.add(subject if isinstance(subject, str) else "")
    if len(named - {""}) > 1:
        return "The request names more than one client."
    return None


def registered_method_refusal(client: Client, description: str) -> str:
    """RFC 6749 5.2 ``invalid_client``'s error_description: name the one method the client is
    registered for (OIDC Core 9: ``token_endpoint_auth_method``), instead of Authlib's list of
    every method the server tried."""
    method = client.token_endpoint_auth_method
    hint = (f"Client authentication failed: {client.client_id} is registered for {method} "
            f"({AUTH_METHOD_HOW.get(method, method)}).")  # fmt: skip
    if description.startswith(_GENERIC_CLIENT_AUTH_FAILURE):
        return hint
    return f"{description} {hint}"


class RealmedInvalidClientError(InvalidClientError):
    """RFC 6749 5.2: a client that tried the Authorization header gets 401 and a challenge of its
    scheme, Basic, whose ``realm`` RFC 7617 2 requires (Authlib's challenge has none); the
    realm the userinfo endpoint's Bearer challenge names too."""

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = OAuth2Error.get_headers(self)
        if self.status_code == 401:
            description = self.get_error_description().replace('"', "|")
            headers.append(("WWW-Authenticate", f'Basic realm="idp", error="{self.error}", '
                                                f'error_description="{description}"'))  # fmt: skip
        return headers
