"""Admin console: the admin API's tokens (docs/api.md).

Thin: every rule lives in ``idp.services.api_tokens``, which the ``idp api-tokens`` commands share.
A new token is rendered straight into the POST's response (``no-store``, as every HTML page) and
never kept anywhere it could be shown again. Behind the console's guard: creating one needs the
same fresh passkey sign-in as every other admin action.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

from idp.admin.blueprint import bp, listed
from idp.composition import clock, services
from idp.extensions import db
from idp.models import ApiToken
from idp.services.api_tokens import (
    MAX_EXPIRES_IN_DAYS,
    SCOPES,
    ApiTokenError,
    ApiTokenService,
)

#: The expiry choices the form offers, in days (0: never).
EXPIRY_CHOICES = ((30, "30 days"), (90, "90 days"), (365, "1 year"), (0, "Never"))


def _service() -> ApiTokenService:
    return services().api_tokens(g.admin.id)


def _token_or_404(name: str) -> ApiToken:
    token = _service().get(name)
    if token is None:
        abort(404, description="There is no API token with this name.")
    return token


def _list_page(error: str | None = None, form: dict[str, Any] | None = None) -> Any:
    page = render_template(
        "admin/api_tokens.html",
        tokens=listed(lambda cursor: _service().listing(clock().now(), cursor)),
        scopes=SCOPES,
        expiry_choices=EXPIRY_CHOICES,
        error=error,
        form=form or {"name": "", "scopes": [], "expires_in": 90},
    )
    return page, (400 if error else 200)


@bp.get("/api-tokens")
def api_tokens() -> Any:
    """Every API token: name, scopes, who created it, created, expires, last used, and whether it
    works (and why not, when its creator is the reason); and the form for a new one."""
    return _list_page()


@bp.post("/api-tokens")
def api_token_create() -> Any:
    """Create a token; it is shown on this response only."""
    name = request.form.get("name", "")[:100]
    scopes = [s[:64] for s in request.form.getlist("scopes")[: len(SCOPES)]]
    raw = request.form.get("expires_in", "")
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
    days = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 5 else -1
    form = {"name": name, "scopes": scopes, "expires_in": days}
    try:
        if not 0 <= days <= MAX_EXPIRES_IN_DAYS:
            raise ApiTokenError(f"a token expires in 1 to {MAX_EXPIRES_IN_DAYS} days, or never")
        new = _service().create(name, scopes, expires_in_days=days or None)
    except ApiTokenError as error:
        db.session.rollback()
        return _list_page(str(error), form)
    db.session.commit()
    return render_template("admin/api_token_created.html", token=new.token, secret=new.secret)


@bp.route("/api-tokens/<name>/revoke", methods=["GET", "POST"])
def api_token_revoke(name: str) -> Any:
    """Confirm, then revoke a token: its next request gets 401."""
    token = _token_or_404(name)
    if request.method != "POST":
        # GET and HEAD ask first; only the POST revokes.
        return render_template("admin/api_token_revoke.html", token=token)
    _service().revoke(token.name)
    db.session.commit()
    flash(f"The token {token.name} is revoked: its next request gets 401.", "info")
    return redirect(url_for("admin.api_tokens"), code=303)
