"""Admin console: the audit log, filtered, page by page, and exported as CSV or JSON Lines.

Thin views over ``idp.services.audit`` (``idp audit export`` uses the same filter and exporters).
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, g, render_template, request, stream_with_context

from idp.admin.blueprint import bp
from idp.composition import clock, request_context
from idp.extensions import db
from idp.services import audit as audit_log
from idp.services.portal import describe_user_agent


def _filter() -> audit_log.AuditFilter:
    try:
        return audit_log.AuditFilter.parse(request.args)
    except audit_log.AuditFilterError:
        abort(400, description="A time in the filter is not valid. Use the date and time fields.")


@bp.get("/audit", endpoint="audit")
def audit_page() -> Any:
    """The audit log: every authentication event and admin action, newest first."""
    where = _filter()
    number = request.args.get("page", "1")
    # ASCII digits only (str.isdigit() is also true of "²", which int() refuses), and few of
    # them (int() refuses more than 4,300 digits).
    digits = number.isascii() and number.isdigit() and len(number) <= 7
    page_number = min(int(number), 100_000) if digits else 1
    page = audit_log.search(db.session(), where, page=page_number)
    kinds = audit_log.distinct_kinds(db.session())
    return render_template(
        "admin/audit.html",
        where=where,
        query=where.as_query(),
        page=page,
        kinds=kinds,
        prefixes=sorted({kind.split(".")[0] + ".*" for kind in kinds if "." in kind}),
        describe=describe_user_agent,
    )


@bp.get("/audit/export.<fmt>")
def audit_export(fmt: str) -> Any:
    """The filtered events as a download, streamed: ``export.csv`` or ``export.jsonl``."""
    if fmt not in audit_log.EXPORTERS:
        abort(404)
    where = _filter()
    # Reading the log is an admin action too; recorded before the first byte goes out. A HEAD
    # gets no body (RFC 9110 9.3.2): nothing is read, nothing recorded (HEAD changes nothing).
    if request.method == "GET":
        audit_log.record(db.session(), "audit.exported", actor_id=g.admin.id,
                         context=request_context(), format=fmt,
                         filter=where.as_query())  # fmt: skip
        db.session.commit()
    stamp = clock().now().strftime("%Y%m%dT%H%M%SZ")
    rows = audit_log.iter_rows(db.session(), where)
    response = Response(
        stream_with_context(audit_log.EXPORTERS[fmt](rows)),
        content_type=audit_log.EXPORT_MEDIA_TYPES[fmt],
    )
    response.headers["Content-Disposition"] = f'attachment; filename="idp-audit-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response
