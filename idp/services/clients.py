"""Registering relying parties, changing them, and checking their credentials.

One service for the admin console and the ``idp clients`` commands: every rule about what a client
may be lives here, and every change is written to the audit log with who made it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idp import checkpoints
from idp.clock import SYSTEM_CLOCK, Clock
from idp.models import AccessToken, Client
from idp.models.base import random_id
from idp.models.clients import HOST_NAME, KIND_NATIVE, KIND_SPA, KIND_WEB, KINDS, PUBLIC_KINDS
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.claim_names import is_claim_scope
from idp.services.crypto import KeyedHasher, new_secret
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from idp.services.signing_keys import SUPPORTED_ALGS

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SECRET_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
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


class ClientRegistrationError(ValueError):
    """The registration is invalid; the message says why."""


class StaleClientError(Exception):
    """The client changed since the version the caller read (another change won)."""


#: Where an update from an expected version is held, in tests, before it claims that version, and
#: where any update is held after claiming it, before it commits (idp.checkpoints).
CLAIMING_CHECKPOINT = "client-version-claiming"
VERSION_CHECKPOINT = "client-version-claimed"


@dataclass(frozen=True)
class NewClient:
    client: Client
    #: Shown once at creation and never again; None for public and private_key_jwt clients.
    client_secret: str | None


@dataclass(frozen=True)
class Actor:
    """Who changes a client, for the audit log: an admin's user id, or None for the command line."""

    user_id: str | None = None
    via: str = "cli"
    context: RequestContext = field(default_factory=RequestContext)


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

    def validated(self, *, development: bool = False) -> ClientFields:
        """The fields with defaults filled in; ``ClientRegistrationError`` names the first fault.
        ``development``: the issuer is on loopback (``validate_backchannel_logout_uri``)."""
        name = self.name.strip()
        if not name:
            raise ClientRegistrationError("a client needs a name")
        if len(name) > 200:
            raise ClientRegistrationError("the name is longer than 200 characters")
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
        return dataclasses.replace(
            self,
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


def _uri_parts(uri: str, what: str) -> SplitResult:
    """The checks every registered URI shares: absolute, no fragment, no wildcard, no
    credentials, no spaces or control characters."""
    if len(uri) > MAX_URI_LENGTH:
        raise ClientRegistrationError(f"{what} is longer than {MAX_URI_LENGTH} characters")
    if any(ord(c) < 0x21 or c == "\x7f" for c in uri):
        raise ClientRegistrationError(f"{what} must not contain spaces or control characters")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ClientRegistrationError(f"{what} is not a valid URL: {uri!r}") from None
    if not parts.scheme or (not parts.netloc and parts.scheme in ("http", "https")):
        raise ClientRegistrationError(f"{what} must be absolute: {uri!r}")
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
    (``development``): a production idp never sends a logout token in clear."""
    what = "back-channel logout URI"
    parts = _uri_parts(uri, what)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and development and _is_loopback(parts.hostname or ""):
        return
    raise ClientRegistrationError(
        f"{what} must use https (http only to a loopback host while the issuer is on loopback): "
        f"{uri!r}"
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
    if parts.scheme != "https" or not parts.hostname or any(ord(c) < 0x21 for c in uri):
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
    )


def _apply(client: Client, fields: ClientFields) -> None:
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


class ClientService:
    def __init__(
        self,
        db: Session,
        secret_hasher: KeyedHasher,
        *,
        issuer: str = "",
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.secret_hasher = secret_hasher
        #: The time of a change made without an explicit ``now``.
        self.clock = clock
        #: An issuer on loopback is a development setup: http back-channel logout URIs on
        #: loopback are accepted then (``validate_backchannel_logout_uri``).
        self.development = on_loopback(issuer)

    def _audit(self, event: str, client_id: str, actor: Actor | None, **details: Any) -> None:
        actor = actor or Actor()
        audit.record(
            self.db,
            event,
            actor_id=actor.user_id,
            client_id=client_id,
            context=actor.context,
            via=actor.via,
            **details,
        )

    def create(
        self,
        *,
        name: str,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        kind: str | None = None,
        public: bool = False,
        auth_method: str | None = None,
        first_party: bool = False,
        id_token_alg: str = "RS256",
        scopes: list[str] | None = None,
        grant_types: list[str] | None = None,
        jwks: dict[str, Any] | None = None,
        logo_uri: str | None = None,
        tos_uri: str | None = None,
        policy_uri: str | None = None,
        backchannel_logout_uri: str | None = None,
        backchannel_logout_session_required: bool = False,
        actor: Actor | None = None,
    ) -> NewClient:
        """Register a client. ``public=True`` without a kind means a single-page app."""
        fields = ClientFields(
            name=name,
            kind=kind or (KIND_SPA if public else KIND_WEB),
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout_redirect_uris or []),
            auth_method=auth_method,
            first_party=first_party,
            id_token_alg=id_token_alg,
            scopes=scopes,
            grant_types=grant_types,
            jwks=jwks,
            logo_uri=logo_uri,
            tos_uri=tos_uri,
            policy_uri=policy_uri,
            backchannel_logout_uri=backchannel_logout_uri,
            backchannel_logout_session_required=backchannel_logout_session_required,
        )
        return self.create_from(fields, actor=actor)

    def create_from(self, fields: ClientFields, *, actor: Actor | None = None) -> NewClient:
        fields = fields.validated(development=self.development)
        secret = new_secret(32) if fields.auth_method in SECRET_AUTH_METHODS else None
        client = Client(
            client_id=random_id(18),
            secret_hash=self.secret_hasher.hash(secret) if secret else None,
            created_at=self.clock.now(),
        )
        _apply(client, fields)
        self.db.add(client)
        self._audit("client.created", client.client_id, actor, client_kind=client.kind)
        return NewClient(client=client, client_secret=secret)

    def _bump(self, client: Client, expected: int | None = None) -> None:
        """A new version for the client, in one conditional UPDATE: with ``expected``, only
        from that version, so that of two changes made from one version only the first applies
        (the other finds no row and raises ``StaleClientError``; its transaction is rolled back).
        The row stays locked until the transaction ends (PostgreSQL's row lock, SQLite's write
        lock), so nothing else changes it in between."""
        where = [Client.client_id == client.client_id]
        if expected is not None:
            checkpoints.reached(CLAIMING_CHECKPOINT)
            where.append(Client.version == expected)
        version = self.db.scalar(
            update(Client)
            .where(*where)
            .values(version=Client.version + 1)
            .returning(Client.version)
            .execution_options(synchronize_session=False)
        )
        if version is None:
            raise StaleClientError(client.client_id)
        set_committed_value(client, "version", version)
        checkpoints.reached(VERSION_CHECKPOINT)

    def update(
        self,
        client: Client,
        fields: ClientFields,
        *,
        actor: Actor | None = None,
        expected_version: int | None = None,
    ) -> str | None:
        """Change a client's settings. Returns a new secret (shown once) when the change moves
        the client to a secret-based auth method it had no secret for; None otherwise.
        ``expected_version``: apply only to that version (the admin API's If-Match)."""
        if (fields.kind in PUBLIC_KINDS) != client.is_public:
            # A public client's users never saw it authenticate; a confidential one's secret
            # would have to vanish or appear. Either is a different registration.
            raise ClientRegistrationError(
                "a client cannot change between confidential and public: register a new one"
            )
        fields = fields.validated(development=self.development)
        self._bump(client, expected_version)
        before = fields_of(client)
        new_secret_value = None
        if fields.auth_method in SECRET_AUTH_METHODS:
            if client.secret_hash is None:
                new_secret_value = new_secret(32)
                client.secret_hash = self.secret_hasher.hash(new_secret_value)
        else:
            # Leaving secret authentication: no secret may keep working.
            client.secret_hash = None
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        _apply(client, fields)
        client.updated_at = self.clock.now()
        changed = sorted(
            f.name
            for f in dataclasses.fields(ClientFields)
            if getattr(before, f.name) != getattr(fields, f.name)
        )
        self._audit("client.updated", client.client_id, actor, changed=changed)
        return new_secret_value

    def get(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        return self.db.get(Client, client_id)

    def list(self) -> list[Client]:
        return list(self.db.scalars(select(Client).order_by(Client.created_at, Client.name)))

    def rotate_secret(
        self,
        client: Client,
        *,
        overlap: int = 0,
        now: datetime | None = None,
        actor: Actor | None = None,
    ) -> str:
        """A new secret, shown once. The current one keeps working for ``overlap`` seconds so
        that the relying party can be redeployed without an outage (0: it stops at once); a
        secret from an earlier rotation stops now."""
        if client.token_endpoint_auth_method not in SECRET_AUTH_METHODS:
            raise ClientRegistrationError("this client does not authenticate with a secret")
        if not 0 <= overlap <= MAX_ROTATION_OVERLAP:
            raise ClientRegistrationError(
                f"the overlap must be between 0 and {MAX_ROTATION_OVERLAP} seconds (30 days)"
            )
        now = now or self.clock.now()
        self._bump(client)
        secret = new_secret(32)
        if overlap and client.secret_hash:
            client.previous_secret_hash = client.secret_hash
            client.previous_secret_expires_at = now + timedelta(seconds=overlap)
        else:
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
        client.secret_hash = self.secret_hasher.hash(secret)
        client.updated_at = now
        self._audit("client.secret_rotated", client.client_id, actor, overlap_seconds=overlap)
        return secret

    def disable(
        self, client: Client, *, now: datetime | None = None, actor: Actor | None = None
    ) -> None:
        """No authorization and no tokens for a disabled client (``query_client`` returns
        nothing for it), and the access tokens it holds stop working now: a disabled app must
        not keep reading users' data until its tokens expire."""
        if client.disabled_at is not None:
            return
        now = now or self.clock.now()
        self._bump(client)
        client.disabled_at = now
        self.db.execute(
            update(AccessToken)
            .where(AccessToken.client_id == client.client_id, AccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        self._audit("client.disabled", client.client_id, actor)

    def enable(self, client: Client, *, actor: Actor | None = None) -> None:
        if client.disabled_at is None:
            return
        self._bump(client)
        client.disabled_at = None
        self._audit("client.enabled", client.client_id, actor)

    def delete(self, client: Client, *, actor: Actor | None = None) -> None:
        """The client and everything issued to it: grants, codes, refresh tokens and consents
        cascade; access tokens from the client credentials grant belong to no grant, so they go
        explicitly."""
        self._audit("client.deleted", client.client_id, actor, name=client.name)
        self.db.execute(
            delete(AccessToken)
            .where(AccessToken.client_id == client.client_id)
            .execution_options(synchronize_session=False)
        )
        self.db.delete(client)


def describe(client: Client) -> dict[str, Any]:
    """A client as the CLI and admin console show it (never a secret or its hash)."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "kind": client.kind,
        "public": client.is_public,
        "status": "active" if client.disabled_at is None else "disabled",
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "scopes": client.scopes,
        "grant_types": client.grant_types,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "first_party": client.first_party,
        "logo_uri": client.logo_uri,
        "tos_uri": client.tos_uri,
        "policy_uri": client.policy_uri,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "backchannel_logout_session_required": client.backchannel_logout_session_required,
        "previous_secret_expires_at": (
            client.previous_secret_expires_at.isoformat()
            if client.previous_secret_expires_at
            else None
        ),
        "disabled_at": client.disabled_at.isoformat() if client.disabled_at else None,
        "created_at": client.created_at.isoformat() if client.created_at else None,
        "updated_at": client.updated_at.isoformat() if client.updated_at else None,
    }
