"""Relying-party (client) registrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class Client(Base):
    """A registered relying party. Implements Authlib's ``ClientMixin`` hooks."""

    __tablename__ = "clients"
    # ``secret_hasher`` below is a per-request helper, not a column.
    __allow_unmapped__ = True

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: HMAC-SHA256 of the secret under a server key; None for public clients.
    secret_hash: Mapped[str | None] = mapped_column(String(128), default=None)
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
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # -- Authlib ClientMixin --------------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # OIDC Core 3.1.2.1: redirect_uri is REQUIRED, so there is never a default.
        return None

    def get_allowed_scope(self, scope: str) -> str:
        if not scope:
            return ""
        allowed = set(self.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # RFC 9700 2.1 / OIDC Core 3.1.2.1: exact string comparison, never a prefix.
        return redirect_uri in self.redirect_uris

    #: Set by ``idp.oidc.server.query_client``: secrets are keyed hashes under a server key.
    secret_hasher: Any = None

    @property
    def client_metadata(self) -> dict[str, Any]:
        """The registration metadata Authlib's endpoints read (RP-Initiated Logout 3.1)."""
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hasher is None:
            return False
        return bool(self.secret_hasher.verify(self.secret_hash, client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types
