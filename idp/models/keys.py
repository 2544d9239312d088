"""Signing keys for ID tokens and access tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(10), index=True)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The private JWK, encrypted with a key derived from the secret key (Fernet).
    private_jwk_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: Set when a newer key of the same alg takes over signing.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: After this, nothing it signed can still be valid and the public key leaves the JWKS.
    unpublish_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class InstallationSecret(Base):
    """A random secret made once per installation and shared by every node through the database
    (one row per use, by ``name``): ``pairwise-subjects`` keys the pairwise subject identifiers
    of OIDC Core 8.1 (idp.services.subjects), which must not change with a node, a restart or the
    rotation of the secret key."""

    __tablename__ = "installation_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: base64url of the random bytes.
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
