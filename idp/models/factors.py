"""Second factors and recovery: TOTP, backup codes, the half-finished sign-in between them, and
the one-time login links and invites."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.models.base import Base, UTCDateTime, utcnow
from idp.models.users import User


class TotpCredential(Base):
    __tablename__ = "totp_credentials"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    #: The RFC 6238 secret, encrypted at rest (Fernet under a key derived from the secret key).
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: None until the user proved the enrolment with a first code.
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The newest accepted 30-second step: a step is never accepted twice (RFC 6238 5.2).
    last_used_step: Mapped[int] = mapped_column(Integer, default=-1)


class BackupCode(Base):
    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Keyed hash of the normalised code; unique so that a look-up finds exactly one row.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class PartialLogin(Base):
    """A sign-in that passed its first factor and waits for the second (or for enrolment)."""

    __tablename__ = "partial_logins"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    amr: Mapped[list[str]] = mapped_column(JSON)
    pending_request_id: Mapped[str | None] = mapped_column(String(32), default=None)
    next_path: Mapped[str | None] = mapped_column(String(2000), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: The user's ``password_version`` the password check read: the second step finishes only
    #: while it is still the user's (None: begun by a node before revision 0029).
    password_version: Mapped[int | None] = mapped_column(Integer, default=None)

    user: Mapped[User] = relationship(lazy="joined")


class LoginLink(Base):
    """A one-time sign-in link an admin sends to a user who lost every way in, or an invite to a
    new account (same mechanics: hashed, short-lived, confirmed by a POST, spent once)."""

    __tablename__ = "login_links"

    #: SHA-256 of the link's secret; the secret itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: "login" (a rescue link, /login/link/...) or "invite" (/invite/...): a link only works at
    #: the page of its own purpose.
    purpose: Mapped[str] = mapped_column(String(16), default="login", server_default="login")
    created_by: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    user: Mapped[User] = relationship(lazy="joined")
