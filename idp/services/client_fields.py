"""What an admin sets on a client app and the rules each field follows (RFC 6749 3.1.2, OIDC
Registration 2, RFC 8252 for native apps); idp.services.clients stores them."""

from __future__ import annotations

import dataclasses
import ipaddress
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.errors import DomainError
from idp.models import Client
from idp.models.clients import (
    HOST_NAME,
    KIND_NATIVE,
    KIND_SPA,
    KIND_WEB,
    KINDS,
    PUBLIC_KINDS,
    SUBJECT_PAIRWISE,
    SUBJECT_PUBLIC,
    SUBJECT_TYPES,
)
from idp.services.claim_names import is_claim_scope
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.services.display_names import BIDI_CONTROLS
from idp.services.host_names import UnencodableHostError, ascii_host
from idp.services.outbound_addresses import forbidden_literal
from idp.services.signing_keys import SUPPORTED_ALGS
from idp.services.subjects import SeveralHostsError, sector_host

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: The longest scope string a grant or token records (its column, idp.models.oauth).
MAX_SCOPE_LENGTH = 1000
#: Every scope the provider knows (discovery's ``scopes_supported``).
SUPPORTED_SCOPES = ("openid", "profile", "email", "offline_access", "groups")
#: A new client's scopes: ``groups`` only when the admin allows it (docs/admins.md).
DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", DEVICE_CODE_GRANT_TYPE)
KIND_LABELS = {
    KIND_WEB: "Web app (confidential, has a backend)",
    KIND_SPA: "Single-page app (public, PKCE)",
    KIND_NATIVE: "Native app (public, PKCE)",
}
#: How long the old secret keeps working after a rotation unless the admin says otherwise.
DEFAULT_ROTATION_OVERLAP = 24 * 3600
#: The longest overlap an admin may choose: a leaked secret must not live on for long.
MAX_ROTATION_OVERLAP = 30 * 24 * 3600
MAX_URIS = 20
MAX_URI_LENGTH = 2000


class ClientRegistrationError(DomainError):
    """The registration is invalid; the message says why."""


@dataclass(frozen=True)
class ClientFields:
    """Everything an admin sets on a client, as entered; ``validated`` normalises and checks it."""

    name: str
    redirect_uris: list[str]
    kind: str = KIND_WEB
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    #: None: the kind's default (client_secret_basic for web apps, none for public ones).
    auth_method: str | None = None
    first_party: bool = False
    id_token_alg: str = "RS256"
    #: None: the defaults.
    scopes: list[str] | None = None
    grant_types: list[str] | None = None
    jwks: dict[str, Any] | None = None
    logo_uri: str | None = None
    tos_uri: str | None = None
    policy_uri: str | None = None
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False
    #: RFC 9126 6: authorization requests only through ``POST /par``.
    require_pushed_authorization_requests: bool = False
    #: RFC 9449 5.2: every token request with a DPoP proof.
    dpop_bound_access_tokens: bool = False
    #: OIDC Core 8 and Registration 2 ``subject_type``; the sector host of a pairwise client
    #: (None: its redirect URIs' host, idp.services.subjects).
    subject_type: str = SUBJECT_PUBLIC
    sector_identifier: str | None = None

    def validated(self, *, development: bool = False) -> ClientFields:
        """The fields with defaults filled in; ``ClientRegistrationError`` names the first fault.
        ``development``: the issuer is on loopback (``validate_backchannel_logout_uri``)."""
        name = self.name.strip()
        if not name:
            raise ClientRegistrationError("a client needs a name")
        if len(name) > 200:
            raise ClientRegistrationError("the name is longer than 200 characters")
        # The name is what users read on the consent page, the device review and the sign-out
        # page before they trust the app: no control (Unicode general category Cc: C0, DEL, C1;
        # RFC 8264 9.12) and no directional formatting character (Unicode Standard Annex 9,
        # "\u202eppA" reads as "App"), as a person's name and a group's texts keep none
        # (idp.services.display_names).
        if any(c in BIDI_CONTROLS or unicodedata.category(c) == "Cc" for c in name):
            raise ClientRegistrationError("the name must not contain control characters")
        if self.kind not in KINDS:
            raise ClientRegistrationError(f"kind must be one of {', '.join(KINDS)}")
        public = self.kind in PUBLIC_KINDS
        native = self.kind == KIND_NATIVE
        redirect_uris = _unique(self.redirect_uris)
        post_logout = _unique(self.post_logout_redirect_uris)
        if len(redirect_uris) > MAX_URIS or len(post_logout) > MAX_URIS:
            raise ClientRegistrationError(f"at most {MAX_URIS} redirect URIs of each sort")
        for uri in redirect_uris:
            validate_redirect_uri(uri, native=native)
        for uri in post_logout:
            validate_redirect_uri(uri, native=native, what="post-logout redirect URI")
        method = self.auth_method or ("none" if public else "client_secret_basic")
        if method not in AUTH_METHODS:
            raise ClientRegistrationError(f"unknown token endpoint auth method {method!r}")
        # RFC 6749 2.1 / RFC 8252 8.5: an app in the user's browser or on their device cannot
        # keep a secret, so it authenticates with nothing and relies on PKCE instead.
        if public != (method == "none"):
            raise ClientRegistrationError(
                "public clients (single-page and native apps), and only they, use auth method "
                "'none'"
            )
        jwks = self.jwks if method == "private_key_jwt" else None
        if method == "private_key_jwt":
            validate_client_jwks(jwks)
        if self.id_token_alg not in SUPPORTED_ALGS:
            raise ClientRegistrationError(
                f"ID token alg must be one of {', '.join(SUPPORTED_ALGS)}"
            )
        scopes = list(DEFAULT_SCOPES) if self.scopes is None else _unique(self.scopes)
        unknown = [s for s in scopes if s not in SUPPORTED_SCOPES and not is_claim_scope(s)]
        if unknown:
            raise ClientRegistrationError(
                f"unknown scope {unknown[0]!r} (a scope of a mapped claim's name is a lowercase "
                "claim name that is not a registered claim)"
            )
        if not scopes:
            raise ClientRegistrationError("a client needs at least one scope")
        if len(" ".join(scopes)) > MAX_SCOPE_LENGTH:
            # Every grant and token stores its scope in a column of this length: beyond it a
            # sign-in or a token would be a server error on PostgreSQL (SQLite ignores lengths).
            raise ClientRegistrationError(
                f"the allowed scopes are longer than {MAX_SCOPE_LENGTH} characters together"
            )
        if self.grant_types is None:
            grants = ["authorization_code", "refresh_token"]
            if not public:
                grants.append("client_credentials")
        else:
            grants = _unique(self.grant_types)
        unknown = [g for g in grants if g not in GRANT_TYPES]
        if unknown:
            raise ClientRegistrationError(f"unknown grant type {unknown[0]!r}")
        if not grants:
            raise ClientRegistrationError("a client needs at least one grant type")
        # Redirects belong to the authorization code flow: a client of the device grant alone (a
        # TV, a command line tool) or of client credentials never receives one.
        if not redirect_uris and "authorization_code" in grants:
            raise ClientRegistrationError("a client needs at least one redirect URI")
        # RFC 6749 4.4: the client credentials grant MUST only be used by confidential clients.
        if public and "client_credentials" in grants:
            raise ClientRegistrationError("a public client cannot use client_credentials")
        logo_uri = _https_link(self.logo_uri, "logo")
        tos_uri = _https_link(self.tos_uri, "terms of service")
        policy_uri = _https_link(self.policy_uri, "privacy policy")
        backchannel_uri = (self.backchannel_logout_uri or "").strip() or None
        if backchannel_uri is not None:
            validate_backchannel_logout_uri(backchannel_uri, development=development)
        sector = _subject_sector(self.subject_type, self.sector_identifier, redirect_uris)
        return dataclasses.replace(
            self,
            sector_identifier=sector,
            name=name,
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout,
            auth_method=method,
            scopes=scopes,
            grant_types=grants,
            jwks=jwks,
            logo_uri=logo_uri,
            tos_uri=tos_uri,
            policy_uri=policy_uri,
            backchannel_logout_uri=backchannel_uri,
            backchannel_logout_session_required=(
                self.backchannel_logout_session_required and backchannel_uri is not None
            ),
        )


def _subject_sector(subject_type: str, sector: str | None, redirect_uris: list[str]) -> str | None:
    """OIDC Core 8.1: the sector host an admin names for a pairwise client, checked; required
    when the redirect URIs span several hosts (where the spec asks for a ``sector_identifier_uri``
    listing them: idp.services.subjects says why an admin names the host instead)."""
    if subject_type not in SUBJECT_TYPES:
        raise ClientRegistrationError(f"subject type must be one of {', '.join(SUBJECT_TYPES)}")
    if subject_type != SUBJECT_PAIRWISE:
        return None  # a public client has no sector: a name given for one is not kept
    if sector and sector.strip():
        # The form the redirect URIs' hosts take too (idp.services.host_names.ascii_host), so
        # that a host named and the same host in a redirect URI are one sector.
        named = sector.strip()
        try:
            sector = ascii_host(named)
        except UnencodableHostError:
            sector = ""
        if len(sector) > 253 or not HOST_NAME.fullmatch(sector):
            raise ClientRegistrationError(
                f"the sector identifier must be a host name (letters, digits, hyphens, dots): "
                f"{named!r}"
            )
        return sector
    try:
        sector_host(redirect_uris)
    except SeveralHostsError as hosts:
        raise ClientRegistrationError(
            f"the redirect URIs span several hosts ({hosts}): name the sector host these "
            "clients share, for pairwise subjects"
        ) from None
    except UnencodableHostError as error:
        raise ClientRegistrationError(f"the redirect URIs' host: {error}") from None
    return None


#: JWK members that only a private or symmetric key has (RFC 7518 6.2.2, 6.3.2, 6.4.1; RFC 8037 2).
PRIVATE_KEY_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def validate_client_jwks(jwks: Any) -> None:
    """RFC 7523 / OIDC Core 9 ``private_key_jwt``: the client's public keys (RFC 7517). A private
    or symmetric key is refused: it would sit in our database, and the client's key is its own."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ClientRegistrationError("private_key_jwt needs the client's public JWKS")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC", "OKP"):
            raise ClientRegistrationError("the JWKS may hold only RSA, EC and OKP public keys")
        if any(member in key for member in PRIVATE_KEY_MEMBERS):
            raise ClientRegistrationError(
                "the JWKS must hold public keys only: the private key stays with the client"
            )
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ClientRegistrationError("the JWKS is not a valid set of public keys") from None


def _https_link(value: str | None, label: str) -> str | None:
    value = (value or "").strip() or None
    if value is not None:
        validate_https_link(value, label)
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def _unsendable(character: str) -> bool:
    """A character no registered URI may hold: a space or control (C0, DEL, C1, category Cc),
    a Unicode space, line or paragraph separator (Zs, Zl, Zp) or format character (Cf: bidi
    overrides, zero-width ones). RFC 3986 2 and 7.2: none is part of a URI, and they are
    invisible or reorder the text an admin reads; a client registered with one was saved, then
    every /authorize for it was a 400. Letters of other scripts (an IRI's) stay allowed."""
    return ord(character) < 0x21 or unicodedata.category(character) in UNSENDABLE_CATEGORIES


UNSENDABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def _uri_parts(uri: str, what: str) -> SplitResult:
    """The checks every registered URI shares: absolute, no fragment, no wildcard, no
    credentials, no spaces or control characters."""
    if len(uri) > MAX_URI_LENGTH:
        raise ClientRegistrationError(f"{what} is longer than {MAX_URI_LENGTH} characters")
    if any(_unsendable(c) for c in uri):
        raise ClientRegistrationError(f"{what} must not contain spaces or control characters")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ClientRegistrationError(f"{what} is not a valid URL: {uri!r}") from None
    # RFC 9110 4.2.1 and 4.2.2: an http(s) URI names a host ("https://:443/" has none).
    if not parts.scheme or (not parts.hostname and parts.scheme in ("http", "https")):
        raise ClientRegistrationError(f"{what} must be absolute: {uri!r}")
    # An internationalised host is one a browser can go to (IDNA 2008, UTS 46): the A-labels
    # idp redirects to and connects to (idp.services.host_names.ascii_host) are then its own.
    if not (parts.hostname or "").isascii():
        try:
            ascii_host(parts.hostname or "")
        except UnencodableHostError as error:
            raise ClientRegistrationError(f"{what} has an invalid host name: {error}") from None
    # RFC 6749 3.1.2: "The endpoint URI MUST NOT include a fragment component." (Back-Channel
    # Logout 1.0 section 2.2 says the same of the logout URI.)
    if parts.fragment or "#" in uri:
        raise ClientRegistrationError(f"{what} must not contain a fragment: {uri!r}")
    # RFC 9700 2.1: exact matching, so a pattern can never be registered.
    if "*" in uri:
        raise ClientRegistrationError(f"{what} must not contain a wildcard: {uri!r}")
    if parts.username is not None or parts.password is not None:
        raise ClientRegistrationError(f"{what} must not contain credentials: {uri!r}")
    return parts


def validate_redirect_uri(uri: str, *, native: bool = False, what: str = "redirect URI") -> None:
    """RFC 9700 2.1 and 4.1: absolute, no fragment, no wildcard; https except on loopback
    (RFC 8252 7.3, and ``localhost`` for development); private-use schemes only for native apps
    (RFC 8252 7.1)."""
    parts = _uri_parts(uri, what)
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        if _is_loopback(parts.hostname or ""):
            return
        raise ClientRegistrationError(f"{what} must use https: {uri!r}")
    # RFC 8252 7.1: private-use URI schemes (reverse domain names) for native apps only.
    if native and "." in parts.scheme:
        return
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ClientRegistrationError(f"{what} scheme not allowed: {uri!r}")
    raise ClientRegistrationError(f"{what} must use https: {uri!r}")


def validate_backchannel_logout_uri(uri: str, *, development: bool) -> None:
    """Back-Channel Logout 1.0 section 2.2: an absolute URL without a fragment. idp POSTs logout
    tokens to it server to server, so it must be https (the token names the user and session);
    plain http only to a loopback host, and only when the issuer itself is on loopback
    (``development``): a production idp never sends a logout token in clear, nor to an address
    no relying party has (idp.services.outbound_addresses)."""
    what = "back-channel logout URI"
    parts = _uri_parts(uri, what)
    try:
        # The host idp connects to must resolve as a name: labels of 1 to 63 characters (RFC
        # 1035 2.3.4), an internationalised one as the A-labels idp sends it to
        # (idp.services.host_names.ascii_host, IDNA 2008).
        host = ascii_host(parts.hostname or "")
    except UnencodableHostError as error:
        raise ClientRegistrationError(f"{what} has an invalid host name: {error}") from None
    if host and not all(0 < len(label) < 64 for label in host.split(".")):
        raise ClientRegistrationError(f"{what} has an invalid host name: {uri!r}")
    if parts.scheme == "http" and development and _is_loopback(parts.hostname or ""):
        return
    if parts.scheme != "https" or not parts.hostname:
        raise ClientRegistrationError(
            f"{what} must use https (http only to a loopback host while the issuer is on "
            f"loopback): {uri!r}"
        )
    if not development and (_is_loopback(host) or forbidden_literal(host)):
        # idp.services.outbound_addresses: no relying party is there (server-side request
        # forgery); a name is checked by what it resolves to, at each delivery.
        raise ClientRegistrationError(
            f"{what} must not name a loopback, link-local, metadata or reserved address: {uri!r}"
        )


def validate_https_link(uri: str, label: str) -> None:
    """Links shown to users on the consent page (OIDC Registration 2 ``logo_uri``, ``tos_uri``,
    ``policy_uri``): https only, so a page of ours never loads or links plain http."""
    if len(uri) > MAX_URI_LENGTH:
        raise ClientRegistrationError(
            f"the {label} link is longer than {MAX_URI_LENGTH} characters"
        )
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018
    except ValueError:
        raise ClientRegistrationError(f"the {label} link is not a valid URL: {uri!r}") from None
    if parts.scheme != "https" or not parts.hostname or any(_unsendable(c) for c in uri):
        raise ClientRegistrationError(f"the {label} link must be an https URL: {uri!r}")
    if parts.username is not None or parts.password is not None:
        raise ClientRegistrationError(f"the {label} link must not contain credentials: {uri!r}")
    if not HOST_NAME.fullmatch(parts.hostname):
        # The logo's origin goes into the consent page's CSP: a plain DNS name only.
        raise ClientRegistrationError(f"the {label} link must name its host by DNS name: {uri!r}")


def on_loopback(issuer: str) -> bool:
    """Is this issuer a development one, on a loopback host?"""
    return bool(issuer) and _is_loopback(urlsplit(issuer).hostname or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fields_of(client: Client) -> ClientFields:
    """A client's current settings, as a starting point for an edit."""
    return ClientFields(
        name=client.name,
        kind=client.kind,
        redirect_uris=list(client.redirect_uris),
        post_logout_redirect_uris=list(client.post_logout_redirect_uris),
        auth_method=client.token_endpoint_auth_method,
        first_party=client.first_party,
        id_token_alg=client.id_token_signed_response_alg,
        scopes=list(client.scopes),
        grant_types=list(client.grant_types),
        jwks=client.jwks,
        logo_uri=client.logo_uri,
        tos_uri=client.tos_uri,
        policy_uri=client.policy_uri,
        backchannel_logout_uri=client.backchannel_logout_uri,
        backchannel_logout_session_required=client.backchannel_logout_session_required,
        require_pushed_authorization_requests=client.require_pushed_authorization_requests,
        dpop_bound_access_tokens=client.dpop_bound_access_tokens,
        subject_type=client.subject_type,
        sector_identifier=client.sector_identifier,
    )


def apply_fields(client: Client, fields: ClientFields) -> None:
    client.name = fields.name
    client.kind = fields.kind
    client.is_public = fields.kind in PUBLIC_KINDS
    client.token_endpoint_auth_method = fields.auth_method or "none"
    client.redirect_uris = list(fields.redirect_uris)
    client.post_logout_redirect_uris = list(fields.post_logout_redirect_uris)
    client.scopes = list(fields.scopes or ())
    client.grant_types = list(fields.grant_types or ())
    client.id_token_signed_response_alg = fields.id_token_alg
    client.jwks = fields.jwks
    client.first_party = fields.first_party
    client.logo_uri = fields.logo_uri
    client.tos_uri = fields.tos_uri
    client.policy_uri = fields.policy_uri
    client.backchannel_logout_uri = fields.backchannel_logout_uri
    client.backchannel_logout_session_required = fields.backchannel_logout_session_required
    client.require_pushed_authorization_requests = fields.require_pushed_authorization_requests
    client.dpop_bound_access_tokens = fields.dpop_bound_access_tokens
    client.subject_type = fields.subject_type
    client.sector_identifier = fields.sector_identifier
