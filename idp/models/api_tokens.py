"""Bearer tokens of the admin API (idp.api): what an automation may do, never its secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, random_id, utcnow


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    #: The handle admins revoke it by, and the audit log's actor (``api-token:<name>``).
    name: Mapped[str] = mapped_column(String(48), unique=True)
    #: HMAC-SHA256 of the token under a key derived from the secret key: looked up by it, so a
    #: leaked database alone yields no usable token (docs/security.md, "Admin API").
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The admin who created it in the console; None: the operator's ``idp api-tokens create``.
    #: The token works only while that admin is an active admin (idp.services.token_creators).
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    #: Why it was revoked when not by hand: its creator was disabled, demoted or deleted
    #: (idp.services.token_creators), so that the console can say why it no longer works.
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)
