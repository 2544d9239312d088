"""The user aggregate."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, random_id, utcnow


class User(Base):
    __tablename__ = "users"

    #: Also the ``sub`` claim: random, opaque and stable (OIDC Core 2: never reassigned).
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    #: Stored lower-cased so that look-ups are case-insensitive on every database.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    #: Moves on each time the password is set, changed or removed (idp.services.users
    #: ``replace_password``; not when a hash is renewed for new parameters): a sign-in records
    #: the version its check read, and the step that opens its session refuses a password
    #: replaced since (idp.services.sign_in, idp.services.partial_logins).
    password_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: WebAuthn user handle (L3 5.4.3): random per user, never the id or the email, so that an
    #: authenticator's stored data reveals nothing about the account.
    webauthn_user_handle: Mapped[str] = mapped_column(
        String(64), unique=True, default=lambda: random_id(32)
    )
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The road to passkeys: "Not now" snoozes the prompt, "Don't ask again" turns it off.
    passkey_prompt_snoozed_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None
    )
    passkey_prompt_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    def get_user_id(self) -> str:
        """Authlib's hook for the resource owner's id."""
        return self.id


class EmailChangeRequest(Base):
    """A pending change of a user's email address, confirmed from the new address.

    Stored, not a stateless token, so that it is spent once and can be ended early: a new request,
    a password change, "sign out everywhere" and the profile's Cancel button end it. Spending it
    is one conditional UPDATE on ``consumed_at`` (idp.services.consume), so it never works twice,
    even if the address later returns to its old value."""

    __tablename__ = "email_change_requests"

    #: SHA-256 of the link's secret; the secret itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Both normalised by idp.services.email_addresses.
    old_email: Mapped[str] = mapped_column(String(320))
    new_email: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Set when the request ends, whether confirmed or not (``outcome`` says how).
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    outcome: Mapped[str | None] = mapped_column(String(32), default=None)
