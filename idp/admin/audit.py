"""Admin console: the audit log, filtered, page by page, and exported as CSV or JSON Lines.

Thin views over ``idp.services.audit`` (``idp audit export`` uses the same filter and exporters).
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, g, render_template, request, stream_with_context

from idp.admin.blueprint import bp, listed
from idp.composition import clock, request_context
from idp.extensions import db
from idp.services import audit as audit_log
from idp.services.portal import describe_user_agent


def _filter(values: Any = None) -> audit_log.AuditFilter:
    """The filter of the page's query, or of ``values`` (the export's form)."""
    try:
        return audit_log.AuditFilter.parse(request.args if values is None else values)
    except audit_log.AuditFilterError:
        abort(400, description="A time in the filter is not valid. Use the date and time fields.")


@bp.get("/audit", endpoint="audit")
def audit_page() -> Any:
    """The audit log: every authentication event and admin action, newest first."""
    where = _filter()
    # A page from the cursor its "Older" or "Newer" link carries (idp.services.pages, the admin
    # API's pager): the same statements whichever page it is, never an OFFSET.
    page = listed(lambda cursor: audit_log.page_after(db.session(), where, cursor))
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


@bp.post("/audit/export.<fmt>")
def audit_export(fmt: str) -> Any:
    """The filtered events as a download, streamed: ``export.csv`` or ``export.jsonl``, from
    the page's form (its filter in the form's fields, with the CSRF token)."""
    if fmt not in audit_log.EXPORTERS:
        abort(404)
    where = _filter(request.form)
    # Reading the log is an admin action too, recorded before the first byte goes out: so the
    # export is a POST with the CSRF token. As a GET, another site's link or a top-level
    # navigation (the SameSite=Lax cookie rides along, RFC 6265bis 5.6.7.1) made an admin's
    # browser write audit rows; a GET and a HEAD are 405 (RFC 9110 9.2.1: they change nothing).
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
