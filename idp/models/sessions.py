"""Server-side browser sessions (the cookie holds only a random reference)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, String, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.models.base import Base, UTCDateTime, random_id, utcnow
from idp.models.users import User


class BrowserSession(Base):
    __tablename__ = "browser_sessions"

    #: SHA-256 of the cookie value: a database leak does not hand out live sessions.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The public session id, published as the ID token's ``sid`` claim.
    sid: Mapped[str] = mapped_column(String(32), unique=True, default=random_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime())
    amr: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(64))
    #: A recovery session (signed in with a backup code): its only way forward is registering a
    #: new passkey or authenticator app.
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: A restricted session whose only way forward is a passkey, not an authenticator app: a
    #: one-time login link or an invite stands in for a lost or missing passkey.
    passkey_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: A backup code opened the session: a recovery's, or a password's second step. New backup
    #: codes end it (idp.services.sessions.end_backup_code_sessions): whoever holds an old code
    #: must not keep the session it opened once the owner replaced the codes. Kept by the full
    #: session a restricted one is promoted to (``SessionService.promote``).
    backup_code: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The passkey (its credential id) whose sign-in started the session, or whose addition made
    #: a restricted session a full one; None for any other sign-in. Removing the passkey ends the
    #: session (idp.services.passkeys.PasskeyService.remove, docs/security.md, "Sessions").
    credential_id: Mapped[str | None] = mapped_column(String(1400), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")

    user: Mapped[User] = relationship(lazy="joined")
