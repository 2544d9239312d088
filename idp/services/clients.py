"""Registering relying parties and checking their credentials."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import Client
from idp.services.crypto import KeyedHasher, new_secret
from idp.services.signing_keys import SUPPORTED_ALGS

AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
DEFAULT_SCOPES = ("openid", "profile", "email", "offline_access")


class ClientRegistrationError(ValueError):
    """The registration is invalid; the message says why."""


@dataclass(frozen=True)
class NewClient:
    client: Client
    #: Shown once at creation and never again; None for public and private_key_jwt clients.
    client_secret: str | None


def validate_redirect_uri(uri: str, *, native: bool = False) -> None:
    """RFC 9700 2.1 and 4.1: absolute, no fragment, no wildcard; https except on loopback."""
    parts = urlsplit(uri)
    if not parts.scheme or (not parts.netloc and parts.scheme in ("http", "https")):
        raise ClientRegistrationError(f"redirect URI must be absolute: {uri!r}")
    if parts.fragment or "#" in uri:
        raise ClientRegistrationError(f"redirect URI must not contain a fragment: {uri!r}")
    if "*" in uri:
        raise ClientRegistrationError(f"redirect URI must not contain a wildcard: {uri!r}")
    if parts.scheme == "https":
        return
    if parts.scheme == "http":
        if _is_loopback(parts.hostname or ""):
            return
        raise ClientRegistrationError(f"redirect URI must use https: {uri!r}")
    # RFC 8252 7.1: private-use URI schemes for native apps only.
    if native and "." in parts.scheme:
        return
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise ClientRegistrationError(f"redirect URI scheme not allowed: {uri!r}")
    raise ClientRegistrationError(f"redirect URI must use https: {uri!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClientService:
    def __init__(self, db: Session, secret_hasher: KeyedHasher) -> None:
        self.db = db
        self.secret_hasher = secret_hasher

    def create(
        self,
        *,
        name: str,
        redirect_uris: list[str],
        post_logout_redirect_uris: list[str] | None = None,
        public: bool = False,
        auth_method: str | None = None,
        first_party: bool = False,
        id_token_alg: str = "RS256",
        scopes: list[str] | None = None,
        grant_types: list[str] | None = None,
        jwks: dict[str, Any] | None = None,
    ) -> NewClient:
        if not name.strip():
            raise ClientRegistrationError("a client needs a name")
        if not redirect_uris:
            raise ClientRegistrationError("a client needs at least one redirect URI")
        for uri in [*redirect_uris, *(post_logout_redirect_uris or [])]:
            validate_redirect_uri(uri, native=public)
        method = auth_method or ("none" if public else "client_secret_basic")
        if method not in AUTH_METHODS:
            raise ClientRegistrationError(f"unknown token endpoint auth method {method!r}")
        if public != (method == "none"):
            raise ClientRegistrationError("public clients, and only they, use auth method 'none'")
        if method == "private_key_jwt" and not (jwks and jwks.get("keys")):
            raise ClientRegistrationError("private_key_jwt needs the client's public JWKS")
        if id_token_alg not in SUPPORTED_ALGS:
            raise ClientRegistrationError(
                f"ID token alg must be one of {', '.join(SUPPORTED_ALGS)}"
            )
        default_grants = ["authorization_code", "refresh_token"]
        if not public:
            default_grants.append("client_credentials")
        grants = grant_types or default_grants
        if public and "client_credentials" in grants:
            raise ClientRegistrationError("a public client cannot use client_credentials")
        secret = new_secret(32) if method in ("client_secret_basic", "client_secret_post") else None
        client = Client(
            client_id=secrets.token_urlsafe(18),
            name=name.strip(),
            secret_hash=self.secret_hasher.hash(secret) if secret else None,
            is_public=public,
            token_endpoint_auth_method=method,
            redirect_uris=list(redirect_uris),
            post_logout_redirect_uris=list(post_logout_redirect_uris or []),
            scopes=list(scopes or DEFAULT_SCOPES),
            grant_types=grants,
            id_token_signed_response_alg=id_token_alg,
            jwks=jwks,
            first_party=first_party,
        )
        self.db.add(client)
        return NewClient(client=client, client_secret=secret)

    def get(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 64:
            return None
        return self.db.get(Client, client_id)

    def list(self) -> list[Client]:
        return list(self.db.scalars(select(Client).order_by(Client.created_at)))

    def rotate_secret(self, client: Client) -> str:
        if client.token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ClientRegistrationError("this client does not authenticate with a secret")
        secret = new_secret(32)
        client.secret_hash = self.secret_hasher.hash(secret)
        return secret

    def delete(self, client: Client) -> None:
        self.db.delete(client)


def describe(client: Client) -> dict[str, Any]:
    """A client as the CLI and admin console show it (never the secret hash)."""
    return {
        "client_id": client.client_id,
        "name": client.name,
        "public": client.is_public,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "scopes": client.scopes,
        "grant_types": client.grant_types,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "first_party": client.first_party,
        "created_at": client.created_at.isoformat() if client.created_at else None,
    }
