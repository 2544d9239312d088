"""The audit log: every authentication event and admin action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    #: The log's pages are read newest first by id (idp.services.audit ``page_after``): each
    #: filter a page may have by one column (kind, user as subject or actor, client) has an
    #: index on that column then id, so a filtered page is a range of it, as an unfiltered one
    #: is of the primary key's, rather than a walk back along the primary key that reads every
    #: row the filter rejects (docs/security.md, "Admin console"). Each also serves every other
    #: read by its first column: the filter's kinds (``distinct_kinds``), a user's activity.
    __table_args__ = (
        Index("ix_audit_events_kind_id", "kind", "id"),
        Index("ix_audit_events_subject_id_id", "subject_id", "id"),
        Index("ix_audit_events_actor_id_id", "actor_id", "id"),
        Index("ix_audit_events_client_id_id", "client_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    #: A user id, ``cli``, or ``api-token:<name>`` (idp.services.api_tokens).
    actor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    subject_id: Mapped[str | None] = mapped_column(String(32), default=None)
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
