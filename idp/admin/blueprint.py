"""The admin console's blueprint and the guard in front of every one of its routes (admin role
and a passkey sign-in within ten minutes, ``idp.services.admin_access``).

It lives apart from ``idp/admin/__init__.py`` so that the page families import it without
importing their own package back (tests/unit/test_import_graph.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, abort, flash, g, redirect, request, url_for

from idp.composition import clock
from idp.services.admin_access import AdminAccess, admin_access
from idp.services.pages import CursorError, Page
from idp.web import login_url
from idp.web.sessions import current_session

bp = Blueprint("admin", __name__, url_prefix="/admin")
T = TypeVar("T")


@bp.before_request
def _guard() -> Any:
    session = current_session()
    decision = admin_access(session, clock().now())
    if decision is AdminAccess.GRANTED:
        assert session is not None
        g.admin = session.user
        g.admin_session = session
        return None
    if decision is AdminAccess.FORBIDDEN:
        abort(403, description="This page is for administrators.")
    # Only a GET can be replayed after signing in; a POST's form is gone, so go to the overview.
    back = request.full_path.rstrip("?") if request.method == "GET" else url_for("admin.index")
    if decision is AdminAccess.REAUTHENTICATE:
        flash("The admin console needs a passkey sign-in within the last 10 minutes.", "info")
    return redirect(login_url(back))


def client_version() -> int | None:
    """The version of the client a form was read from (its hidden ``version``), which the save
    holds to (RFC 9110 13.1.1); None when absent or not a version."""
    raw = request.form.get("version", "")
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


def listed(read: Callable[[str | None], Page[T]]) -> Page[T]:
    """The page of a list the request's ``cursor`` names (its Older or Newer, Previous or Next
    link; idp.services.pages), the first without one; a cursor not ours is a calm 400."""
    try:
        return read(request.args.get("cursor") or None)
    except CursorError:
        abort(400, description="This page's link is not valid. Start again from the first page.")
