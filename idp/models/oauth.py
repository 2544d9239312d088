"""The OAuth / OpenID Connect aggregate: pending requests, grants, codes, tokens, consents.

A ``Grant`` is one authorization by one user for one client; every code, access token and refresh
token hangs off a grant, so revoking the grant revokes the whole family at once (RFC 6749 4.1.2 and
RFC 9700 4.14.2: a replayed code or refresh token revokes what was issued from it).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models.base import Base, UTCDateTime, random_id, utcnow
from idp.models.clients import Client
from idp.models.users import User


class PendingAuthorization(Base):
    """A validated authorization request waiting for sign-in or consent, kept server-side."""

    __tablename__ = "pending_authorizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The user who approved the consent screen for this request, if it was shown.
    consented_by: Mapped[str | None] = mapped_column(String(32), default=None)

    client: Mapped[Client] = relationship(lazy="joined")


class PushedAuthorizationRequest(Base):
    """An authorization request a client pushed (RFC 9126 2), validated as ``/authorize``
    validates one, until its ``request_uri`` is used once at ``/authorize`` (RFC 9126 4) or
    expires. Only the SHA-256 of the request_uri's random part is kept (docs/security.md: a
    stolen database holds no usable secret)."""

    __tablename__ = "pushed_authorization_requests"

    secret_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The client's ``secret_generation`` when the push authenticated (RFC 9126 2): spent under a
    #: later one, a rotation stopped the secret that authenticated it (``spend_pushed``).
    secret_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(1000))
    sid: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime())
    amr: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The ``sub`` and ``sid`` the client was given for this grant, as its ID token names them
    #: (pairwise for a pairwise client, idp.services.subjects): the logout token names them again
    #: (Back-Channel Logout 1.0 2.4, 2.6), whatever the client's subject type has become since.
    #: Recorded at the code's issue and set again at its exchange (or the device grant's poll),
    #: where the ID token is minted, if the client's changed between the two; None in a grant
    #: older than migration 0019, whose logout token is computed from the client's settings.
    issued_sub: Mapped[str | None] = mapped_column(String(255), default=None)
    issued_sid: Mapped[str | None] = mapped_column(String(64), default=None)

    user: Mapped[User] = relationship(lazy="joined")


class CodeFacts:
    """What Authlib's code grant and its OpenID extension read of a code
    (``AuthorizationCodeMixin``): the stored code (``AuthorizationCode``) and the spent one
    (idp.services.spent_codes.SpentCode) answer alike from their fields and their grant's."""

    if TYPE_CHECKING:
        redirect_uri: Any
        scope: Any
        nonce: Any
        grant: Any

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.grant.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.grant.acr

    def get_amr(self) -> list[str]:
        return list(self.grant.amr)


class AuthorizationCode(CodeFacts, Base):
    """Implements Authlib's ``AuthorizationCodeMixin``."""

    __tablename__ = "authorization_codes"

    #: SHA-256 of the code; the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scope: Mapped[str] = mapped_column(String(1000))
    nonce: Mapped[str | None] = mapped_column(String(512), default=None)
    code_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    code_challenge_method: Mapped[str | None] = mapped_column(String(10), default=None)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: RFC 9449 10 ``dpop_jkt``: the thumbprint of the DPoP key the authorization request named;
    #: the code is exchanged only with a proof of that key (idp.services.spent_codes).
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), default=None)

    grant: Mapped[Grant] = relationship(lazy="joined")


class AccessToken(Base):
    """An issued JWT access token (RFC 9068), recorded so that it can be revoked or introspected."""

    __tablename__ = "access_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: SHA-256 of the whole compact JWT, as issued: the bearer endpoints find the token by it
    #: without verifying its signature (idp.services.tokens.find_access_token). Only idp ever
    #: held the string, so a recorded hash proves it was issued here. None for tokens issued
    #: before migration 0014, which are still found by signature.
    token_hash: Mapped[str | None] = mapped_column(
        String(64), default=None, unique=True, index=True
    )
    grant_id: Mapped[str | None] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), default=None, index=True
    )
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    scope: Mapped[str] = mapped_column(String(1000))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    grant: Mapped[Grant | None] = relationship(lazy="joined")

    # -- Authlib TokenMixin (used by the revocation and introspection endpoints) ----------------
    #: Set by ``idp.oidc.server`` when it finds the token: the application's clock, which
    #: decides when the token has expired.
    clock: Clock = SYSTEM_CLOCK

    def check_client(self, client: Client) -> bool:
        # RFC 7009 2.1: a client may only revoke the tokens issued to it.
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_revoked(self) -> bool:
        return self.revoked_at is not None or (
            self.grant is not None and self.grant.revoked_at is not None
        )

    def is_expired(self) -> bool:
        return self.expires_at <= self.clock.now()


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1000))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The refresh token whose rotation issued this one (None for the first, from a code): a
    #: retried refresh finds the successor it supersedes (idp.services.grants).
    parent_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    #: RFC 9449 5: the RFC 7638 thumbprint of the DPoP key a public client's refresh token is
    #: bound to (None: unbound, a confidential client's or one issued without DPoP). Its
    #: refresh must come with a proof signed by that key (idp.services.refresh_tokens).
    jkt: Mapped[str | None] = mapped_column(String(64), default=None)

    grant: Mapped[Grant] = relationship(lazy="joined")

    # -- Authlib TokenMixin (used by the revocation and introspection endpoints) ----------------
    #: Set by ``idp.oidc.server`` when it finds the token: the application's clock, which
    #: decides when the token has expired.
    clock: Clock = SYSTEM_CLOCK

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    def is_revoked(self) -> bool:
        return self.grant.revoked_at is not None

    def is_expired(self) -> bool:
        return self.expires_at <= self.clock.now()


class Consent(Base):
    """What a user agreed to share with a third-party client, remembered per user and client."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsedClientAssertion(Base):
    """``jti`` values of spent ``private_key_jwt`` assertions (RFC 7523 3: replay protection)."""

    __tablename__ = "used_client_assertions"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class UsedDPoPProof(Base):
    """DPoP proofs seen (RFC 9449 11.1: a ``jti`` used once), by the hash of the key's thumbprint
    and the ``jti``, kept until the proof's ``iat`` leaves the accepted window
    (idp.services.dpop)."""

    __tablename__ = "used_dpop_proofs"

    jti_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


#: A device authorization's decision (RFC 8628 3.3): None while the user has not answered.
DEVICE_APPROVED = "approved"
DEVICE_DENIED = "denied"


class DeviceAuthorization(Base):
    """One device authorization request (RFC 8628 3.1): a device code for the device to poll
    with and a user code for the person to type on the verification page.

    Two secrets, each spent once through the consume-once primitive: the user code when the
    user approves or denies (``decided_at``), the device code when tokens are issued
    (``consumed_at``). Both are stored as hashes only. Once approved, the row carries the grant
    that the tokens hang off, and it plays the authorization code's part for the ID token
    (the same ``auth_time``, ``acr``, ``amr`` and ``sid`` claims as the code flow)."""

    __tablename__ = "device_authorizations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    #: SHA-256 of the device code (256 bits of entropy, RFC 8628 5.2).
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Keyed hash of the normalised user code: about 34 bits of entropy, so a plain hash of a
    #: leaked table could be reversed; under a server key it cannot (RFC 8628 5.1).
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: Seconds the device must wait between polls; raised by 5 at each ``slow_down`` (RFC 8628 3.5).
    interval: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    decision: Mapped[str | None] = mapped_column(String(16), default=None)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    grant_id: Mapped[str | None] = mapped_column(
        ForeignKey("grants.id", ondelete="CASCADE"), default=None
    )
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    client: Mapped[Client] = relationship(lazy="joined")
    grant: Mapped[Grant | None] = relationship(lazy="joined")

    # -- what the ID token reads (Authlib's AuthorizationCodeMixin, as AuthorizationCode) ------
    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return None  # RFC 8628 has no nonce: no browser redirect carries one back

    def get_auth_time(self) -> int | None:
        return int(self.grant.auth_time.timestamp()) if self.grant is not None else None

    def get_acr(self) -> str | None:
        return self.grant.acr if self.grant is not None else None

    def get_amr(self) -> list[str] | None:
        return list(self.grant.amr) if self.grant is not None else None
