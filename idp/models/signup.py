"""Self-service sign-up: the one-time link that proves an email address before an account exists."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class SignupLink(Base):
    """Sent to the address a visitor typed; spending it (a POST) proves the address is theirs.

    It names an email, not a user: no account is created until the address is proven, so nobody
    can reserve someone else's address by typing it."""

    __tablename__ = "signup_links"

    #: SHA-256 of the link's secret; the secret itself is never stored.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Normalised (lower-cased) like ``User.email``.
    email: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
