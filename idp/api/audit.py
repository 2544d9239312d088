"""``/api/v1/audit``: the audit log, filtered as on the console's audit page, a page at a time."""

from __future__ import annotations

from typing import Any

from idp.api import schemas
from idp.api.core import operation
from idp.extensions import db
from idp.services import audit
from idp.services.audit import AuditFilter

TAG = "audit"


@operation("GET", "/audit", summary="Audit events, newest first", scope="audit:read", tag=TAG,
           query=schemas.AuditQuery, response=schemas.AuditList)  # fmt: skip
def list_audit_events(query: schemas.AuditQuery) -> Any:
    where = AuditFilter.parse(
        {"since": query.since, "until": query.until, "actor": query.actor, "kind": query.event,
         "outcome": query.outcome, "user": query.user, "client": query.client}
    )  # fmt: skip
    page = audit.page_after(db.session(), where, query.cursor, query.limit)
    items = [schemas.AuditEventOut.model_validate(audit.export_record(row)) for row in page.items]
    return schemas.AuditList(items=items, next_cursor=page.next_cursor).model_dump(mode="json")
