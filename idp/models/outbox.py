"""The outbox: messages delivered after the commit that queued them (idp.services.outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


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
