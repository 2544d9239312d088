"""The portal's first page family: its home page and the signed-in user's sign-in methods
(password, authenticator app, backup codes; passkeys have pages of their own, ``passkeys``), with
the recovery page from which a restricted session adds a way in."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask import session as flask_session

from idp.account.blueprint import (
    RESUME_ADD_PASSKEY,
    after_method_added,
    bp,
    method_removal,
    offer_to_sign_out_others,
    refused_at,
    restricted_page,
    signed_in_recently,
    stepped_up,
)
from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import BrowserSession
from idp.services import audit, portal
from idp.services.passkey_names import describe_authenticator
from idp.services.passwords import PasswordPolicyError
from idp.services.sessions import end_backup_code_sessions, end_password_sessions
from idp.services.totp import CODE_CLOCK, CODE_FORMAT, CODE_MISMATCH, Confirmation
from idp.services.users import PASSWORD_CHANGED, PASSWORD_REMOVED, replace_password
from idp.web import confirm_page, confirmed
from idp.web.sessions import current_session


@bp.get("/account")
def home() -> Any:
    """The account page: passkeys, password, authenticator app, backup codes."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for("account.home")))
    passkeys = services().passkeys.passkeys_of(session.user)
    now = clock().now()
    return render_template(
        "account/home.html",
        user=session.user,
        session=session,
        passkeys=[
            (p, describe_authenticator(p.aaguid)[1], portal.passkey_status(p, now))
            for p in passkeys
        ],
        # WebAuthn L3 5.1.10 signalAllAcceptedCredentials: the ids idp still accepts. A passkey
        # flagged as a possible clone is refused at every sign-in until removed (L3 6.1.1), so
        # it is none of them: the credential manager may stop offering it in the autofill.
        accepted_credential_ids=[p.credential_id for p in passkeys if p.flagged_at is None],
        recent=stepped_up(session),
        # Only where the button will work: the sign-in it asked for was given.
        resume_add_passkey=request.args.get("resume") == RESUME_ADD_PASSKEY and stepped_up(session),
        totp_enabled=services().totp.is_enabled(session.user),
        backup_codes_left=services().backup_codes.remaining(session.user),
        rp_id=runtime().settings.rp_id,
        passwords_allowed=services().policy.passwords_allowed,
        field_error=flask_session.pop("field_error", None),
        signal_details=flask_session.pop("signal_user_details", False),
        offer_sign_out_others=flask_session.pop("offer_sign_out_others", False)
        and portal.has_other_sessions(db.session(), session, now),
    )


@bp.get("/account/recover")
def recover() -> Any:
    """A recovery session's only page: add a new passkey or an authenticator app."""
    return restricted_page("account/recover.html")


@bp.route("/account/totp", methods=["GET", "POST"])
def totp_setup() -> Any:
    """Set up an authenticator app: QR code and secret, confirmed with a first code."""
    session = signed_in_recently("account.totp_setup")
    if not isinstance(session, BrowserSession):
        return session
    service = services().totp
    user = session.user
    if service.is_enabled(user) and not session.restricted:
        # A confirmed enrolment replaces the app's secret: replacing the app means removing it
        # first, with the step-up, notification and audit a removal gets (sensitive
        # actions); only a recovery session (the app was lost) re-enrols over it.
        flash("An authenticator app is already set up. Remove it to set up another.", "info")
        return redirect(url_for("account.home"))
    error = None
    now = clock().now()
    sealed = flask_session.get("totp_enrolment")
    if request.method == "POST":
        code = request.form.get("code", "")[:16]
        confirmed_app = service.confirm_enrolment(user, sealed, code, now,
                                                  replace=session.restricted)  # fmt: skip
        if confirmed_app is Confirmation.TAKEN:  # another browser set one up meanwhile: it stays
            db.session.rollback()
            flask_session.pop("totp_enrolment", None)
            flash("An authenticator app is already set up. Remove it to set up another.", "info")
            return redirect(url_for("account.home"))
        if confirmed_app is not Confirmation.REFUSED:
            flask_session.pop("totp_enrolment", None)
            codes = after_method_added(session, "An authenticator app")
            if codes is None:
                db.session.rollback()  # the ended session's app is not kept
                return redirect(url_for("login.login"))
            if confirmed_app is Confirmation.REPLACED:
                _app_replaced(session)
            audit.record(db.session(), "totp.enabled", subject_id=user.id,
                         context=request_context())  # fmt: skip
            db.session.commit()
            if codes:
                return render_template("account/backup_codes.html", codes=codes, fresh=True,
                                       heading="Authenticator app added")  # fmt: skip
            flash("Authenticator app added.", "info")
            return redirect(url_for("account.home"))
        enrolment = service.resume_enrolment(user, sealed, now)
        if enrolment is None:
            flask_session.pop("totp_enrolment", None)
            flash("The setup expired. Scan this new code with your app.", "error")
            return redirect(url_for("account.totp_setup"))
        error = TOTP_REFUSALS[service.refusal(user, sealed, code, now)]
    else:
        # GET and HEAD store nothing on the server (RFC 9110 9.2.1): the pending secret waits,
        # sealed, in this browser's signed cookie until the first code confirms it, Cancel
        # drops it or it expires; until then every reload shows the same key.
        enrolment = service.pending_enrolment(user, sealed, now)
        flask_session["totp_enrolment"] = enrolment.sealed
    page = render_template("account/totp.html", enrolment=enrolment, error=error,
                           passwordless=user.password_hash is None)  # fmt: skip
    return page, (400 if error else 200)


def _app_replaced(session: BrowserSession) -> None:
    """A recovery session set up an app over the account's own, which stopped working: that is
    the old app's removal, and the owner hears of it and the audit log records it as one
    (docs/security.md, "Mail and email addresses"), not only that an app was added."""
    services().notifier.notify(session.user, "method_removed", method="The authenticator app")
    audit.record(db.session(), "totp.removed", subject_id=session.user_id,
                 context=request_context(), reason="replaced")  # fmt: skip


#: What the set-up page says when a first code is refused (``TotpService.refusal``).
TOTP_REFUSALS = {
    CODE_FORMAT: "Enter the 6-digit code your app shows for this key.",
    CODE_MISMATCH: "That code did not match this key. Check that the app shows the entry you "
    "just added, and enter its current code.",
    CODE_CLOCK: "That code is from this key, but for another time: the clock on your phone is "
    "off. Set it to the network time and try again.",
}


@bp.post("/account/totp/cancel")
def totp_cancel() -> Any:
    """Stop setting up an authenticator app: the pending key is forgotten."""
    flask_session.pop("totp_enrolment", None)
    session = current_session()
    if session is not None and session.restricted:
        return redirect(url_for("account.recover"))
    return redirect(url_for("account.home"))


@bp.route("/account/totp/remove", methods=["GET", "POST"])
def totp_remove() -> Any:
    """Remove the authenticator app (after a recent sign-in, and a confirmation)."""
    session = signed_in_recently("account.totp_remove")
    if not isinstance(session, BrowserSession):
        return session
    if not confirmed():
        return confirm_page(
            title="Remove the authenticator app?",
            message="Codes from the app will no longer be accepted after your password. "
            "You can set it up again later.",
            action=url_for("account.totp_remove"),
            button="Remove authenticator app",
            cancel=url_for("account.home"),
        )
    # Never refused (MethodRemoval.totp_refusal): an authenticator app is no way in alone.
    services().totp.remove(session.user)
    services().notifier.notify(session.user, "method_removed", method="The authenticator app")
    offer_to_sign_out_others()
    audit.record(db.session(), "totp.removed", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash("Authenticator app removed.", "info")
    return redirect(url_for("account.home"))


@bp.route("/account/backup-codes", methods=["GET", "POST"])
def backup_codes_regenerate() -> Any:
    """New backup codes, shown once; the old set stops working (so: after a confirmation)."""
    session = signed_in_recently("account.backup_codes_regenerate")
    if not isinstance(session, BrowserSession):
        return session
    left = services().backup_codes.remaining(session.user)
    if not confirmed():
        return confirm_page(
            title="Get new backup codes?",
            message=(
                f"You get 10 new codes, and the {left} codes you have now stop working at once: "
                "throw away any copy of them."
                if left
                else "You get 10 new codes, shown once: have a safe place ready to keep them."
            ),
            action=url_for("account.backup_codes_regenerate"),
            button="Get new backup codes",
            cancel=url_for("account.home"),
        )
    now = clock().now()
    codes = services().backup_codes.regenerate(session.user, now)
    # Like every other change of a sign-in method, the owner hears of it (docs/security.md,
    # "Mail and email addresses").
    services().notifier.notify(session.user, "backup_codes_regenerated")
    # The old codes may be someone else's too: the sessions they opened end with them, this
    # browser's excepted (docs/security.md, "Sessions").
    sessions_ended = end_backup_code_sessions(db.session(), session.user_id, session.id_hash, now)
    offer_to_sign_out_others()
    audit.record(db.session(), "backup_codes.regenerated", subject_id=session.user_id,
                 context=request_context(), sessions_ended=sessions_ended)  # fmt: skip
    db.session.commit()
    return render_template("account/backup_codes.html", codes=codes, fresh=not left,
                           heading="Your new backup codes")  # fmt: skip


@bp.post("/account/password")
def password_set() -> Any:
    """Set or change the password (after a recent sign-in)."""
    session = signed_in_recently("account.home")
    if not isinstance(session, BrowserSession):
        return session
    if not services().policy.passwords_allowed:
        flash("This site signs in with passkeys only: passwords cannot be set.", "error")
        return redirect(url_for("account.home"))
    try:
        replace_password(
            session.user, runtime().passwords.hash(request.form.get("new_password", ""))
        )
    except PasswordPolicyError as error:
        return refused_at("new-password", str(error), "password-heading")
    services().notifier.notify(session.user, "password_changed")
    ended, sessions_ended = _old_password_gone(session, PASSWORD_CHANGED)
    audit.record(db.session(), "password.changed", subject_id=session.user_id,
                 context=request_context(), partial_sign_ins_ended=ended,
                 sessions_ended=sessions_ended)  # fmt: skip
    db.session.commit()
    flash("Password saved.", "info")
    return redirect(url_for("account.home"))


@bp.route("/account/password/remove", methods=["GET", "POST"])
def password_remove() -> Any:
    """Go passwordless (after a recent sign-in and a confirmation): only when a passkey
    remains."""
    session = signed_in_recently("account.password_remove")
    if not isinstance(session, BrowserSession):
        return session
    if not confirmed():
        return confirm_page(
            title="Remove your password?",
            message="You will sign in with your passkeys only. You can set a password again later.",
            action=url_for("account.password_remove"),
            button="Remove password",
            cancel=url_for("account.home"),
        )
    if method_removal().password_refusal(session.user) is not None:
        return refused_at("remove-password", "Add a passkey before removing your password, so "
                           "that you can still sign in.", "password-heading")  # fmt: skip
    replace_password(session.user, None)
    services().notifier.notify(session.user, "method_removed", method="Your password")
    ended, sessions_ended = _old_password_gone(session, PASSWORD_REMOVED)
    audit.record(db.session(), "password.removed", subject_id=session.user_id,
                 context=request_context(), partial_sign_ins_ended=ended,
                 sessions_ended=sessions_ended)  # fmt: skip
    db.session.commit()
    flash("Password removed: you sign in with passkeys now.", "info")
    return redirect(url_for("account.home"))


def _old_password_gone(session: BrowserSession, reason: str) -> tuple[int, int]:
    """What follows a password changed or removed: a pending email change may be the work of
    whoever knew the old password, and so may a sign-in waiting for its second step and every
    other session signed in with it (docs/security.md, "Sign-in, passkeys and assurance" and
    "Sessions"); all of them end, and the sessions signed in another way are offered an ending.
    How many sign-ins waiting for their second step, and how many sessions, ended."""
    now = clock().now()
    services().email_changes.end_pending(session.user, now, reason)
    ended = services().partial_logins.end_for(session.user_id, now)
    sessions_ended = end_password_sessions(db.session(), session.user_id, session.id_hash, now)
    offer_to_sign_out_others()
    return ended, sessions_ended
