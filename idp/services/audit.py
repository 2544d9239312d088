"""Recording audit events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from idp.models import AuditEvent


@dataclass(frozen=True)
class RequestContext:
    """Who is asking, as far as the transport tells: for audit records and sessions."""

    ip_address: str = ""
    user_agent: str = ""


def record(
    db: Session,
    kind: str,
    *,
    outcome: str = "success",
    actor_id: str | None = None,
    subject_id: str | None = None,
    client_id: str | None = None,
    context: RequestContext | None = None,
    **details: Any,
) -> AuditEvent:
    context = context or RequestContext()
    event = AuditEvent(
        kind=kind,
        outcome=outcome,
        actor_id=actor_id,
        subject_id=subject_id,
        client_id=client_id,
        ip_address=context.ip_address[:64],
        user_agent=context.user_agent[:512],
        details=details,
    )
    db.add(event)
    return event
