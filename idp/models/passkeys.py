"""Passkeys (WebAuthn discoverable credentials) and the challenges of their ceremonies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.models.base import Base, UTCDateTime, random_id, utcnow
from idp.models.users import User


class Passkey(Base):
    __tablename__ = "passkeys"

    #: The credential id, base64url (WebAuthn L3 5.1 rawId), unique across all users.
    credential_id: Mapped[str] = mapped_column(String(1400), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    #: WebAuthn L3 6.1: signCount is a 32-bit unsigned integer, up to 2**32 - 1; PostgreSQL's
    #: INTEGER stops at 2**31 - 1, so a counter past it failed the ceremony with a 500. SQLite's
    #: INTEGER holds 64 bits already.
    sign_count: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), default=0
    )
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    aaguid: Mapped[str] = mapped_column(String(36), default="00000000-0000-0000-0000-000000000000")
    name: Mapped[str] = mapped_column(String(100))
    #: WebAuthn L3 6.1 flags BE and BS: a backup-eligible credential is a synced passkey.
    backup_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    backed_up: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Set when the authenticator's signature counter went backwards (WebAuthn L3 6.1.1).
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    flagged_reason: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The SHA-256 fingerprint (hex) of the configured attestation root its registration's
    #: attestation chained to (idp.services.attestation ``attest``; WebAuthn L3 7.1 steps 21 to
    #: 23); None: not verified (no roots were configured, or it was registered before this was
    #: recorded).
    attestation_root: Mapped[str | None] = mapped_column(String(64), default=None)

    user: Mapped[User] = relationship(lazy="joined")


class WebAuthnChallenge(Base):
    """A ceremony's challenge: random, short-lived, bound to a browser and a ceremony kind, and
    spent once through the consume-once primitive."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    kind: Mapped[str] = mapped_column(String(16))  # "registration" | "authentication"
    challenge: Mapped[str] = mapped_column(String(128))  # base64url
    #: SHA-256 of the browser binding (a random value in the browser's signed cookie).
    binding_hash: Mapped[str] = mapped_column(String(64))
    #: For registration: the user the credential will belong to.
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
