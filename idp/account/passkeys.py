"""The portal's passkey pages: adding a passkey (its options and its registration), renaming
one and removing one (docs/users/passkeys.md)."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, jsonify, redirect, request, url_for
from flask import session as flask_session

from idp import checkpoints
from idp.account.blueprint import (
    RESUME_ADD_PASSKEY,
    after_method_added,
    bp,
    method_removal,
    offer_to_sign_out_others,
    refused_at,
    step_up_url,
    stepped_up,
)
from idp.composition import clock, request_context, services
from idp.extensions import db
from idp.models import BrowserSession, Passkey
from idp.services.method_removal import Refusal
from idp.services.passkey_checks import PasskeyError, forgettable_after_refusal
from idp.services.passkey_names import UNRECOGNISED, clean_name, describe_authenticator, in_notice
from idp.web import confirm_page, confirmed
from idp.web.sessions import browser_binding, current_session, signed_out_with_removed_passkey

#: Where a passkey's registration is held, in tests, after its session was accepted and before it
#: writes anything (idp.checkpoints).
REGISTER_CHECKPOINT = "passkeys.register"
#: Why a passkey stays, in the user's words.
PASSKEY_REMOVAL_REFUSALS = {
    Refusal.ADMIN_PASSKEY: "Administrators must keep a passkey: add another one before removing "
    "this one.",
    Refusal.LAST_WAY_IN: "This is your only way to sign in, so it can't be removed. Add another "
    "passkey or a password first.",
}

#: Refusals by the sign-in policy's authenticator rules: trying again with the same one fails too.
POLICY_REFUSALS = frozenset({
    "authenticator_not_allowed", "attestation_not_trusted", "attestation_aaguid_mismatch",
    "attestation_certificate_invalid",
})  # fmt: skip


@bp.post("/account/passkeys/options")
def passkey_registration_options() -> Any:
    """Registration options for a new passkey (after a recent sign-in)."""
    session = current_session()
    # Back from signing in, the account page is ready to add the passkey (RESUME_ADD_PASSKEY).
    back = url_for("account.home", resume=RESUME_ADD_PASSKEY)
    if session is None:
        # The session ended since the page was shown: the page's script signs in again.
        return jsonify(error="login_required", redirect=url_for("login.login", next=back)), 401
    if not stepped_up(session):
        return jsonify(error="reauthenticate", redirect=step_up_url(back)), 403
    body = request.get_json(silent=True)
    conditional = isinstance(body, dict) and body.get("mediation") == "conditional"
    ceremony = services().passkeys.registration_options(
        session.user, browser_binding(), clock().now(), conditional=conditional
    )
    db.session.commit()
    return jsonify(challenge_id=ceremony.challenge_id, publicKey=ceremony.options)


@bp.post("/account/passkeys")
def passkey_register() -> Any:
    """Verify the new credential and store it."""
    session = current_session()
    if session is None:
        return jsonify(error="login_required"), 401
    if not stepped_up(session):
        return jsonify(error="reauthenticate"), 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="invalid_request"), 400
    credential = body.get("credential")
    import json

    given = body.get("name") if isinstance(body.get("name"), str) else None
    checkpoints.reached(REGISTER_CHECKPOINT)
    try:
        passkey = services().passkeys.register(
            session.user,
            str(body.get("challenge_id", "")),
            credential if isinstance(credential, str) else json.dumps(credential),
            browser_binding(),
            given,
            request_context(),
            clock().now(),
            conditional=body.get("mediation") == "conditional",
        )
    except PasskeyError as error:
        db.session.commit()
        message = (
            "The passkey was not added: your organisation allows passkeys from approved "
            "authenticators only. Use one of those, or ask your administrator which to use."
            if error.reason in POLICY_REFUSALS
            else "The passkey was not added. You can try again."
        )
        payload: dict[str, Any] = {"error": "registration_failed", "message": message}
        # The authenticator made the credential and idp refused it: the page asks the credential
        # manager to forget it (WebAuthn L3 5.1.10), unless its id is registered already.
        forget = forgettable_after_refusal(db.session(), credential)
        if forget is not None:
            payload["unknown_credential_id"] = forget
        return jsonify(payload), 400
    credential_id = passkey.credential_id
    codes = after_method_added(session, in_notice(passkey.aaguid), credential_id)
    if codes is None:
        db.session.rollback()  # the ended session's passkey is not kept (nor known: forget it)
        return jsonify(error="login_required", unknown_credential_id=credential_id), 401
    if not clean_name(given) and describe_authenticator(passkey.aaguid)[0] == UNRECOGNISED:
        # Named after this browser and the day: the account page invites a better name.
        flash(f"Passkey “{passkey.name}” added. Give it a name you will recognise, such as "
              "the phone or password manager that holds it: rename it below.", "info")  # fmt: skip
    db.session.commit()
    return jsonify(credential_id=passkey.credential_id, name=passkey.name, backup_codes=codes), 201


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
        services().passkeys.rename(passkey, request.form.get("name", ""), request_context())
    except PasskeyError:
        return refused_at(f"rename-{credential_id}", "A passkey needs a name.",
                           f"passkey-{credential_id}")  # fmt: skip
    db.session.commit()
    flask_session["signal_user_details"] = True
    flash("Passkey renamed.", "info")
    return redirect(url_for("account.home"))


@bp.route("/account/passkeys/<credential_id>/remove", methods=["GET", "POST"])
def passkey_remove(credential_id: str) -> Any:
    """Remove a passkey (after a recent sign-in and a confirmation; never the last way in)."""
    session, passkey = _own_passkey(credential_id)
    if not stepped_up(session):
        # Back to this question after signing in (``signed_in_recently``), not to the top of
        # the account page with nothing said.
        return redirect(step_up_url(url_for("account.passkey_remove", credential_id=credential_id)))
    # Every session it signed in ends with it, this one too if it did (end_passkey_sessions).
    this_browser = session.credential_id == passkey.credential_id
    if not confirmed():
        return confirm_page(
            title=f"Remove the passkey “{passkey.name}”?",
            message="You will no longer be able to sign in with it, and wherever you signed in "
            "with it you are signed out"
            + (", here too: you signed in with it in this browser" if this_browser else "")
            + ". It stays in its credential manager until you delete it there too.",
            action=url_for("account.passkey_remove", credential_id=credential_id),
            button="Remove passkey",
            cancel=url_for("account.home"),
        )
    refusal = method_removal().passkey_refusal(session.user, passkey)
    if refusal is not None:
        # Said under the passkey it is about, the page scrolled to it (``refused_at``).
        return refused_at(f"remove-{credential_id}", PASSKEY_REMOVAL_REFUSALS[refusal],
                           f"passkey-{credential_id}")  # fmt: skip
    user = session.user
    if services().passkeys.remove(passkey, request_context(), clock().now()) is None:
        db.session.commit()
        flash("Passkey removed.", "info")  # by another tab, a moment ago
        return redirect(url_for("account.home"))
    services().notifier.notify(user, "method_removed", method=in_notice(passkey.aaguid))
    if this_browser:  # ended: signed out here, told why, and back to sign in another way
        db.session.commit()
        return signed_out_with_removed_passkey(
            passkey.credential_id, "Passkey removed. You had signed in with it in this browser, "
            "so you are signed out here too: sign in with another way.",
            url_for("account.home"), login_hint=user.email,
        )  # fmt: skip
    offer_to_sign_out_others()
    db.session.commit()
    flash("Passkey removed.", "info")
    return redirect(url_for("account.home"))
