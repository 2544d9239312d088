"""The portal: the signed-in user's account and passkeys (the full portal has its own issue)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for

from idp.extensions import db
from idp.models import BrowserSession, Passkey
from idp.models.base import utcnow
from idp.services.passkeys import PasskeyError, describe_authenticator
from idp.web import browser_binding, current_session, passkey_service, request_context

bp = Blueprint("account", __name__)

#: Adding or removing a sign-in method needs a sign-in this recent (DESIGN.md, step-up).
STEP_UP_WINDOW = timedelta(minutes=5)


def _recent(session: BrowserSession) -> bool:
    return utcnow() - session.auth_time <= STEP_UP_WINDOW


@bp.get("/")
def index() -> Any:
    """Send visitors to their account."""
    return redirect(url_for("account.home"))


@bp.get("/account")
def home() -> Any:
    """The account page with the user's passkeys."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for("account.home")))
    passkeys = passkey_service().passkeys_of(session.user)
    return render_template(
        "account/home.html",
        user=session.user,
        session=session,
        passkeys=[(p, describe_authenticator(p.aaguid)[1]) for p in passkeys],
        recent=_recent(session),
    )


@bp.post("/account/passkeys/options")
def passkey_registration_options() -> Any:
    """Registration options for a new passkey (after a recent sign-in)."""
    session = current_session()
    if session is None:
        return jsonify(error="login_required"), 401
    if not _recent(session):
        reauth = url_for("login.login", next=url_for("account.home"))
        return jsonify(error="reauthenticate", redirect=reauth), 403
    ceremony = passkey_service().registration_options(session.user, browser_binding(), utcnow())
    db.session.commit()
    return jsonify(challenge_id=ceremony.challenge_id, publicKey=ceremony.options)


@bp.post("/account/passkeys")
def passkey_register() -> Any:
    """Verify the new credential and store it."""
    session = current_session()
    if session is None:
        return jsonify(error="login_required"), 401
    if not _recent(session):
        return jsonify(error="reauthenticate"), 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="invalid_request"), 400
    credential = body.get("credential")
    import json

    try:
        passkey = passkey_service().register(
            session.user,
            str(body.get("challenge_id", "")),
            credential if isinstance(credential, str) else json.dumps(credential),
            browser_binding(),
            body.get("name") if isinstance(body.get("name"), str) else None,
            request_context(),
            utcnow(),
        )
    except PasskeyError:
        db.session.commit()
        message = "The passkey could not be saved. Please try again."
        return jsonify(error="registration_failed", message=message), 400
    db.session.commit()
    return jsonify(credential_id=passkey.credential_id, name=passkey.name), 201


def _own_passkey(credential_id: str) -> tuple[BrowserSession, Passkey]:
    session = current_session()
    if session is None:
        abort(401)
    passkey = db.session.get(Passkey, credential_id)
    if passkey is None or passkey.user_id != session.user_id:
        abort(404)
    return session, passkey


@bp.post("/account/passkeys/<credential_id>/rename")
def passkey_rename(credential_id: str) -> Any:
    """Rename a passkey."""
    _session, passkey = _own_passkey(credential_id)
    try:
        passkey_service().rename(passkey, request.form.get("name", ""))
    except PasskeyError:
        flash("A passkey needs a name.", "error")
        return redirect(url_for("account.home"))
    db.session.commit()
    flash("Passkey renamed.", "info")
    return redirect(url_for("account.home"))


@bp.post("/account/passkeys/<credential_id>/remove")
def passkey_remove(credential_id: str) -> Any:
    """Remove a passkey (after a recent sign-in; never the last way in)."""
    session, passkey = _own_passkey(credential_id)
    if not _recent(session):
        return redirect(url_for("login.login", next=url_for("account.home")))
    others = [p for p in passkey_service().passkeys_of(session.user) if p is not passkey]
    if not others and not session.user.password_hash:
        flash("This is your only way to sign in, so it can't be removed. Add another passkey "
              "or a password first.", "error")  # fmt: skip
        return redirect(url_for("account.home"))
    passkey_service().remove(passkey, request_context())
    db.session.commit()
    flash("Passkey removed.", "info")
    return redirect(url_for("account.home"))
