"""Relying-party (client) registrations."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import JSON, Boolean, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models.base import Base, UTCDateTime, utcnow

#: What kind of application a client is (OIDC Registration 2 ``application_type``, refined):
#: a confidential web app with a backend, or a public one that cannot keep a secret.
KIND_WEB = "web"
KIND_SPA = "spa"
KIND_NATIVE = "native"
KINDS = (KIND_WEB, KIND_SPA, KIND_NATIVE)
PUBLIC_KINDS = (KIND_SPA, KIND_NATIVE)
#: A DNS name (RFC 1123 letters, digits, hyphens and dots): nothing that could end a CSP source.
#: OIDC Core 8: the subject identifier types (discovery's ``subject_types_supported``).
SUBJECT_PUBLIC = "public"
SUBJECT_PAIRWISE = "pairwise"
SUBJECT_TYPES = (SUBJECT_PUBLIC, SUBJECT_PAIRWISE)
HOST_NAME = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


class Client(Base):
    """A registered relying party. Implements Authlib's ``ClientMixin`` hooks."""

    __tablename__ = "clients"
    # ``secret_hasher`` and ``clock`` below are helpers, not columns.
    __allow_unmapped__ = True

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The display name users see on the consent page and in their connected apps.
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default=KIND_WEB, server_default=KIND_WEB)
    #: HMAC-SHA256 of the secret under a server key; None for public clients.
    secret_hash: Mapped[str | None] = mapped_column(String(128), default=None)
    #: The secret before the last rotation, still accepted until ``previous_secret_expires_at``
    #: so that a relying party can be redeployed with the new one without an outage.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    is_public: Mapped[bool] = mapped_column(Boolean, default=False)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(40))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(10), default="RS256")
    #: Public keys for ``private_key_jwt`` client authentication (RFC 7523).
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Only members of the client's allowed groups may sign in to it (idp.models.groups); with
    #: none left (the last one deleted), no one may.
    restricted_to_groups: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    #: Shown on the consent page (OIDC Registration 2 ``logo_uri``, ``tos_uri``, ``policy_uri``).
    logo_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    tos_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    policy_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    #: OpenID Connect Back-Channel Logout 1.0 section 2.2: where a logout token is POSTed when a
    #: session this client received tokens in ends; and whether the client needs ``sid`` in it
    #: (idp always sends ``sid``, so the flag is kept and shown, never a reason to send less).
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2000), default=None)
    backchannel_logout_session_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    #: RFC 9126 6 ``require_pushed_authorization_requests``: the client may start an
    #: authorization request only by pushing it (``POST /par``), never with its parameters in
    #: the browser's address (idp.oidc.checks.check_pushed_required).
    require_pushed_authorization_requests: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    #: RFC 9449 5.2 ``dpop_bound_access_tokens``: the client always uses DPoP, and a token
    #: request of its without a proof is refused (idp.oidc.server), so that none of its access
    #: tokens is a bearer token.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    #: OIDC Core 8 and Registration 2 ``subject_type``: "public" (every client sees the user's
    #: id) or "pairwise" (a ``sub`` of the client's sector only, idp.services.subjects).
    subject_type: Mapped[str] = mapped_column(
        String(16), default=SUBJECT_PUBLIC, server_default=SUBJECT_PUBLIC
    )
    #: The sector host an admin named for a pairwise client (OIDC Core 8.1 asks for one when the
    #: redirect URIs span several hosts; docs/admins.md); None: the redirect URIs' own host.
    sector_identifier: Mapped[str | None] = mapped_column(String(253), default=None)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Bumped by every change (``UPDATE ... WHERE version = :expected``): the admin API's ETag, so
    #: that of two concurrent edits from one version only one is applied (RFC 9110 13.1.1).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    #: Bumped by every rotation that stops a secret at once (idp.services.pending_authorizations
    #: ``withdraw_pushed``): a push stores the one it authenticated under, and /authorize refuses
    #: one pushed under an earlier secret (RFC 9126 2; docs/security.md, "Clients").
    secret_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    @property
    def logo_origin(self) -> str | None:
        """``https://host[:port]`` of the logo, for the consent page's CSP ``img-src``."""
        if not self.logo_uri:
            return None
        try:
            parts = urlsplit(self.logo_uri)
            port = parts.port
        except ValueError:
            return None
        host = parts.hostname or ""
        if parts.scheme != "https" or not HOST_NAME.fullmatch(host):
            return None
        return f"https://{host}" + (f":{port}" if port else "")

    # -- Authlib ClientMixin --------------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OIDC Core 3.1.2.1: redirect_uri is REQUIRED, so there is never a default.
        return None

    def get_allowed_scope(self, scope: str) -> str:
        """``scope`` less what this registration does not allow as it stands, in its order, each
        scope once: RFC 6749 3.3 (the issued scope may be narrower than the requested, and the
        answer names it); ``offline_access`` only with the ``refresh_token`` grant (OIDC Core
        11). The one rule for a request at the authorization or device endpoint, a stored or
        device request when it is answered, a code's exchange, a refresh and client credentials
        (Authlib asks this method): what an admin has since taken from the client is not issued.
        A set intersection on the client at hand (the token side's cached copy): no statement."""
        if not scope:
            return ""
        allowed = set(self.scopes)
        kept = [s for s in dict.fromkeys(scope.split()) if s in allowed]
        if "offline_access" in kept and not self.check_grant_type("refresh_token"):
            kept.remove("offline_access")
        return " ".join(kept)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 2.1 / OIDC Core 3.1.2.1: exact string comparison, never a prefix; the one
        # exception is the port of a native app's loopback redirect (RFC 8252 7.3).
        if redirect_uri in self.redirect_uris:
            return True
        return self.kind == KIND_NATIVE and any(
            loopback_port_variant(registered, redirect_uri) for registered in self.redirect_uris
        )

    #: Set by ``idp.oidc.clients.query_client`` and ``idp.services.client_cache``: secrets are
    #: keyed hashes under a server key.
    secret_hasher: Any = None
    #: Set there too: the application's clock, which ends a rotated secret's overlap.
    clock: Clock = SYSTEM_CLOCK

    @property
    def client_metadata(self) -> dict[str, Any]:
        """The registration metadata Authlib's endpoints read (RP-Initiated Logout 3.1)."""
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hasher is None:
            return False
        if self.secret_hasher.verify(self.secret_hash, client_secret):
            return True
        # The secret before the last rotation, only while its overlap lasts.
        expires = self.previous_secret_expires_at
        return bool(
            expires is not None
            and self.clock.now() < expires
            and self.secret_hasher.verify(self.previous_secret_hash, client_secret)
        )

    def previous_secret_ends_for(self, client_secret: str) -> datetime | None:
        """When ``client_secret`` stops working, if it is the secret before the last rotation
        (not the current one) and still in its overlap; None otherwise (the current secret, no
        secret, or one that works no longer). What it authenticates must not outlive it: a
        pushed request's request_uri (RFC 9126 2; idp.oidc.pushed)."""
        expires = self.previous_secret_expires_at
        if (
            expires is None
            or self.secret_hasher is None
            or not self.clock.now() < expires
            or self.secret_hasher.verify(self.secret_hash, client_secret)
            or not self.secret_hasher.verify(self.previous_secret_hash, client_secret)
        ):
            return None
        return expires

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def loopback_port_variant(registered: str, requested: str) -> bool:
    """RFC 8252 7.3: for a loopback IP redirect URI the authorization server MUST allow any port
    at request time (the native app binds an ephemeral one). Everything else, scheme, host
    (an IP literal: 8.3 says ``localhost`` is NOT RECOMMENDED), path and query, must match."""
    try:
        want, got = urlsplit(registered), urlsplit(requested)
        got.port  # noqa: B018 - raises ValueError on a malformed or out-of-range port
    except ValueError:
        return False
    if want.scheme != "http" or got.scheme != "http" or not _is_loopback_ip(want.hostname):
        return False
    if got.username is not None or got.password is not None or got.fragment:
        return False
    return (want.hostname, want.path, want.query) == (got.hostname, got.path, got.query) and (
        requested == f"http://{got.netloc}{got.path}" + (f"?{got.query}" if got.query else "")
    )


def _is_loopback_ip(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
