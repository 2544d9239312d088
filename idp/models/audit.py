"""The audit log: every authentication event and admin action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, utcnow

#: The partial index's condition, and a term of every query filtered by another outcome: a
#: database uses a partial index only where the query's WHERE implies its condition, which
#: SQLite sees only in the condition itself, written as a literal ("The Partial Index Query
#: Planner Rules"), and PostgreSQL not from a bound value in a generic plan.
UNUSUAL_OUTCOME = "outcome <> 'success'"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    #: The log's pages are read newest first by id (idp.services.audit ``page_after``): each
    #: filter a page may have by one column (kind, user as subject or actor, client) has an
    #: index on that column then id, so a filtered page is a range of it, as an unfiltered one
    #: is of the primary key's, rather than a walk back along the primary key that reads every
    #: row the filter rejects (docs/security.md, "Admin console"). Each also serves every other
    #: read by its first column: the filter's kinds (``distinct_kinds``), a user's activity.
    #: The outcome's index holds only the rows whose outcome is not the usual ``success``: the
    #: rare ones an admin looks for (a failure, a throttled request) are a range of it, while a
    #: page of successes, most of the log, is found within a page or two of the primary key's
    #: walk back; the sign-in's successful rows, most writes, add no entry to it.
    __table_args__ = (
        Index("ix_audit_events_kind_id", "kind", "id"),
        Index("ix_audit_events_subject_id_id", "subject_id", "id"),
        Index("ix_audit_events_actor_id_id", "actor_id", "id"),
        Index("ix_audit_events_client_id_id", "client_id", "id"),
        Index("ix_audit_events_outcome_id", "outcome", "id",
              sqlite_where=text(UNUSUAL_OUTCOME), postgresql_where=text(UNUSUAL_OUTCOME)),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    #: Compared by code point on PostgreSQL too, as on SQLite (BINARY), whatever the database's
    #: locale: a filter's prefix is a range of it (idp.services.prefixes), which under a
    #: language's collation holds texts that do not start with the prefix ('ADMIN.X' and
    #: 'admin@x' sort between 'admin.' and 'admin/' in en-US) (migration 0026).
    kind: Mapped[str] = mapped_column(
        String(64).with_variant(String(64, collation="C"), "postgresql")
    )
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    #: A user id, ``cli``, or ``api-token:<name>`` (idp.services.api_tokens).
    actor_id: Mapped[str | None] = mapped_column(String(64), default=None)
    subject_id: Mapped[str | None] = mapped_column(String(32), default=None)
    client_id: Mapped[str | None] = mapped_column(String(64), default=None)
    ip_address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(512), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
