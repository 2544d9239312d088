"""Second factors and recovery: TOTP, backup codes, and the half-finished sign-in between them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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

    user: Mapped[User] = relationship(lazy="joined")


class AttemptCounter(Base):
    """Consecutive failures per account and factor, or per client address (database backend)."""

    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Attempts counted, each before it was checked (idp.services.rate_limits: a reservation).
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: ``last_failure_at`` before the latest count: the counting statement returns it, so that
    #: the attempt it counted is judged by the counter as it stood before (one statement).
    previous_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)


class FactorLock(Base):
    """A sign-in factor locked after too many consecutive failures: the state an admin lifts with
    ``idp users unlock``. Kept in the database even when the counters live in Redis, which may
    lose them (docs/security.md: a lost counter may reset a backoff, never lift a lock)."""

    __tablename__ = "factor_locks"

    #: The counter's key (``pwd:<email key>``, ``otp:<user id>``, ...).
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxMessage(Base):
    """Something to deliver after the commit that queued it (idp.services.outbox): a notification
    to a user (channel ``mail``: sent by SMTP when configured, else kept here and logged), or a
    back-channel logout announcement to a relying party (channel ``http``: ``recipient`` is the
    client id, ``details`` the session; idp.services.backchannel_logout)."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: While ``body`` holds a one-time secret (a link): the same body without it. Once the message
    #: is sent or the secret expires, this replaces ``body`` and becomes None.
    redacted_body: Mapped[str | None] = mapped_column(Text, default=None)
    secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: SMTP delivery: attempts so far, and when the next one is due (None: not for SMTP). An
    #: attempt claims the message by moving ``next_attempt_at`` to the retry time first, so two
    #: nodes never send it twice and a failure leaves it queued for the backoff.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None, index=True
    )
    channel: Mapped[str] = mapped_column(String(16), default="mail", server_default="mail")
    #: The last failed attempt: when, and why (a short, secret-free reason shown in the console).
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str | None] = mapped_column(String(200), default=None)


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
