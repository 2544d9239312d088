"""Sign-in pages. For now email + password; passkeys plug in here (issue: passkeys)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for

from idp.extensions import db
from idp.models import PendingAuthorization
from idp.models.base import utcnow
from idp.services.login import GENERIC_FAILURE, login_with_password
from idp.web import request_context, runtime, session_service, set_session_cookie

bp = Blueprint("login", __name__)


def _pending(pending_id: str | None) -> PendingAuthorization | None:
    if not pending_id:
        return None
    pending = db.session.get(PendingAuthorization, pending_id[:64])
    if pending is None or pending.consumed_at is not None or pending.expires_at <= utcnow():
        return None
    return pending


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with email and password."""
    pending = _pending(request.values.get("request"))
    if request.method == "GET":
        return render_template(
            "login/login.html",
            pending=pending,
            email=request.args.get("login_hint", "")[:320],
            error=None,
        )
    email = request.form.get("email", "")[:320]
    password = request.form.get("password", "")
    result = login_with_password(
        db.session(), runtime().passwords, email, password, request_context()
    )
    if result.user is None:
        db.session.commit()  # the failure is audited
        return render_template(
            "login/login.html", pending=pending, email=email, error=GENERIC_FAILURE
        ), 401
    new = session_service().create(result.user, list(result.amr), request_context(), utcnow())
    db.session.commit()
    target = (
        url_for("oidc.authorize_continue", pending_id=pending.id)
        if pending is not None
        else url_for("account.home")
    )
    response = redirect(target)
    set_session_cookie(response, new.cookie_value)
    return response
