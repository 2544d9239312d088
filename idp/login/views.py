"""Sign-in pages: passkeys first (autofill, button, email-first), password as the fallback."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from idp.extensions import db
from idp.models import PendingAuthorization, User
from idp.models.base import utcnow
from idp.services.login import GENERIC_FAILURE, login_with_password
from idp.services.passkeys import PasskeyError
from idp.services.users import UserService
from idp.web import (
    browser_binding,
    passkey_service,
    request_context,
    runtime,
    safe_next,
    start_session,
)

bp = Blueprint("login", __name__)

#: What a user sees when a passkey did not work; the audit log has the reason.
PASSKEY_FAILURE = "That passkey didn't work. Try again, or use your password instead."


def _pending(pending_id: str | None) -> PendingAuthorization | None:
    if not pending_id:
        return None
    pending = db.session.get(PendingAuthorization, pending_id[:64])
    if pending is None or pending.consumed_at is not None or pending.expires_at <= utcnow():
        return None
    return pending


def _destination(pending: PendingAuthorization | None, next_path: str | None) -> str:
    """Where a successful sign-in goes: back into the authorization request, or a local page."""
    if pending is not None:
        return url_for("oidc.authorize_continue", pending_id=pending.id)
    return safe_next(next_path) or url_for("account.home")


def _page(pending: PendingAuthorization | None, email: str, error: str | None) -> str:
    return render_template(
        "login/login.html",
        pending=pending,
        email=email,
        error=error,
        next_path=safe_next(request.values.get("next")),
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in: passkey autofill on the email field, or email and password."""
    pending = _pending(request.values.get("request"))
    if request.method == "GET":
        return _page(pending, request.args.get("login_hint", "")[:320], None)
    email = request.form.get("email", "")[:320]
    password = request.form.get("password", "")
    result = login_with_password(
        db.session(), runtime().passwords, email, password, request_context()
    )
    if result.user is None:
        db.session.commit()  # the failure is audited
        return _page(pending, email, GENERIC_FAILURE), 401
    response = redirect(_destination(pending, request.form.get("next")))
    start_session(result.user, result.amr, response)
    db.session.commit()
    return response


@bp.post("/login/passkey/options")
def passkey_options() -> Any:
    """WebAuthn request options: discoverable (no email) or for one email's passkeys."""
    body = request.get_json(silent=True) or {}
    email = body.get("email") if isinstance(body, dict) else None
    user: User | None = None
    if isinstance(email, str) and email.strip():
        user = UserService(db.session(), runtime().passwords).find_by_email(email)
    else:
        email = None
    ceremony = passkey_service().authentication_options(
        browser_binding(), utcnow(), user=user, email=email
    )
    db.session.commit()
    return jsonify(challenge_id=ceremony.challenge_id, publicKey=ceremony.options)


@bp.post("/login/passkey/verify")
def passkey_verify() -> Any:
    """Check an assertion and sign the user in (amr hwk/swk + user + mfa)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="invalid_request", message=PASSKEY_FAILURE), 400
    credential = body.get("credential")
    try:
        signed_in = passkey_service().authenticate(
            str(body.get("challenge_id", "")),
            credential if isinstance(credential, str) else _json_text(credential),
            browser_binding(),
            request_context(),
            utcnow(),
        )
    except PasskeyError as error:
        db.session.commit()  # the spent challenge and the audited failure persist
        payload: dict[str, Any] = {"error": "passkey_failed", "message": PASSKEY_FAILURE}
        # Signal API: only when no account at all owns the credential may the browser forget it.
        if error.reason == "unknown_credential" and isinstance(credential, dict):
            payload["unknown_credential_id"] = credential.get("id")
        return jsonify(payload), 400
    pending = _pending(str(body.get("request") or ""))
    destination = _destination(pending, str(body.get("next") or ""))
    response = jsonify(redirect=destination)
    start_session(signed_in.user, signed_in.amr, response)
    db.session.commit()
    return response


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value) if isinstance(value, dict) else ""


def redirect_to_reauthenticate(next_path: str) -> Response:
    """Step-up: sign in again, then come back."""
    return redirect(url_for("login.login", next=next_path))
