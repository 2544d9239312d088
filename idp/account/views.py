"""The portal: the signed-in user's account and passkeys (the full portal has its own issue)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import (
    session as flask_session,
)
from markupsafe import Markup

from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import BrowserSession, Passkey
from idp.services import audit, portal
from idp.services.activity import describe_event
from idp.services.claims import shared_with_apps
from idp.services.email_addresses import EmailAddressError
from idp.services.passkeys import (
    UNRECOGNISED,
    PasskeyError,
    clean_name,
    describe_authenticator,
)
from idp.services.passwords import PasswordPolicyError
from idp.services.policy import ACR_PHISHING_RESISTANT
from idp.services.portal import step_up_satisfied, strongest_acr
from idp.services.totp import CODE_CLOCK, CODE_FORMAT, CODE_MISMATCH
from idp.services.users import (
    CANCELLED,
    PASSWORD_CHANGED,
    SIGNED_OUT,
)
from idp.web import confirm_page, confirmed, outbox_hint
from idp.web.sessions import browser_binding, current_session, promote_session

bp = Blueprint("account", __name__)


def _stepped_up(session: BrowserSession) -> bool:
    """the design step-up: a sign-in within 5 minutes, as strong as the user's strongest method
    (a restricted session: within 5 minutes, whatever its strength; see ``step_up_satisfied``)."""
    return step_up_satisfied(db.session(), session, clock().now())


def _step_up_url(next_path: str) -> str:
    """Sign in again (with the strongest method) and come back."""
    session = current_session()
    needs_passkey = session is not None and strongest_acr(db.session(), session.user) in (
        ACR_PHISHING_RESISTANT,
    )
    flash(
        "For your security, confirm it's you: sign in again"
        + (" with your passkey." if needs_passkey else "."),
        "info",
    )
    return url_for("login.login", next=next_path)


@bp.get("/")
def index() -> Any:
    """Send visitors to their account."""
    return redirect(url_for("account.home"))


# Pages a recovery (restricted) session may use: its only way forward is a new method.
RECOVERY_ENDPOINTS = {
    "account.recover",
    "account.passkey_registration_options",
    "account.passkey_register",
    "account.totp_setup",
    "account.totp_cancel",
}
#: After a one-time login link or an invite, a passkey is the only way forward.
PASSKEY_ONLY_ENDPOINTS = RECOVERY_ENDPOINTS - {"account.totp_setup", "account.totp_cancel"}


@bp.before_request
def _restricted_sessions_only_recover() -> Any:
    session = current_session()
    if session is None or not session.restricted:
        return None
    allowed = PASSKEY_ONLY_ENDPOINTS if session.passkey_only else RECOVERY_ENDPOINTS
    if request.endpoint not in allowed:
        return redirect(url_for("account.recover"))
    return None


def _other_primary_method(session: BrowserSession, *, exclude: str) -> bool:
    """Is there still a way in besides the one being removed? A password counts only together
    with an enrolled second step or where policy allows passwords alone; a passkey always does."""
    user = session.user
    has_passkey = bool(services().passkeys.passkeys_of(user))
    if exclude != "passkey" and has_passkey:
        return True
    # Where policy turned passwords off, a password is no way in at all.
    password_works = user.password_hash is not None and services().policy.passwords_allowed
    return exclude != "password" and password_works


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
        recent=_stepped_up(session),
        totp_enabled=services().totp.is_enabled(session.user),
        backup_codes_left=services().backup_codes.remaining(session.user),
        rp_id=runtime().settings.rp_id,
        passwords_allowed=services().policy.passwords_allowed,
        signal_details=flask_session.pop("signal_user_details", False),
        offer_sign_out_others=flask_session.pop("offer_sign_out_others", False)
        and portal.has_other_sessions(db.session(), session, now),
    )


def _signed_in_recently(next_endpoint: str) -> BrowserSession | Any:
    """The session if it passed the step-up rule, else a redirect to sign in again."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for(next_endpoint)))
    if not _stepped_up(session):
        return redirect(_step_up_url(url_for(next_endpoint)))
    g.account_session = session
    return session


def restricted_page(template: str) -> Any:
    """The only page of a restricted session (one that must add a way in first); without a
    session, the sign-in page; an unrestricted session has its account page instead."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login"))
    if not session.restricted:
        return redirect(url_for("account.home"))
    if not _stepped_up(session):
        # Past the step-up window it can no longer add a method (docs/security.md, Sessions).
        return render_template("account/restricted_expired.html", user=session.user)
    return render_template(template, user=session.user, session=session)


@bp.get("/account/recover")
def recover() -> Any:
    """A recovery session's only page: add a new passkey or an authenticator app."""
    return restricted_page("account/recover.html")


@bp.route("/account/totp", methods=["GET", "POST"])
def totp_setup() -> Any:
    """Set up an authenticator app: QR code and secret, confirmed with a first code."""
    session = _signed_in_recently("account.totp_setup")
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
        if service.confirm_enrolment(user, sealed, code, now):
            flask_session.pop("totp_enrolment", None)
            codes = _after_method_added(session, "An authenticator app")
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
    session = _signed_in_recently("account.home")
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
    services().totp.remove(session.user)
    services().notifier.notify(session.user, "method_removed", method="The authenticator app")
    _offer_to_sign_out_others()
    audit.record(db.session(), "totp.removed", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash("Authenticator app removed.", "info")
    return redirect(url_for("account.home"))


@bp.route("/account/backup-codes", methods=["GET", "POST"])
def backup_codes_regenerate() -> Any:
    """New backup codes, shown once; the old set stops working (so: after a confirmation)."""
    session = _signed_in_recently("account.home")
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
    codes = services().backup_codes.regenerate(session.user, clock().now())
    # Issue 18 item 9: like every other change of a sign-in method, the owner hears of it.
    services().notifier.notify(session.user, "backup_codes_regenerated")
    _offer_to_sign_out_others()
    audit.record(db.session(), "backup_codes.regenerated", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    return render_template("account/backup_codes.html", codes=codes, fresh=not left,
                           heading="Your new backup codes")  # fmt: skip


@bp.post("/account/password")
def password_set() -> Any:
    """Set or change the password (after a recent sign-in)."""
    session = _signed_in_recently("account.home")
    if not isinstance(session, BrowserSession):
        return session
    if not services().policy.passwords_allowed:
        flash("This site signs in with passkeys only: passwords cannot be set.", "error")
        return redirect(url_for("account.home"))
    try:
        session.user.password_hash = runtime().passwords.hash(request.form.get("new_password", ""))
    except PasswordPolicyError as error:
        flash(str(error), "error")
        return redirect(url_for("account.home"))
    services().notifier.notify(session.user, "password_changed")
    # A pending email change may be the work of whoever knew the old password.
    services().email_changes.end_pending(session.user, clock().now(), PASSWORD_CHANGED)
    _offer_to_sign_out_others()
    audit.record(db.session(), "password.changed", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash("Password saved.", "info")
    return redirect(url_for("account.home"))


@bp.post("/account/password/remove")
def password_remove() -> Any:
    """Go passwordless: only when a passkey remains."""
    session = _signed_in_recently("account.home")
    if not isinstance(session, BrowserSession):
        return session
    if not _other_primary_method(session, exclude="password"):
        flash("Add a passkey before removing your password, so that you can still sign in.",
              "error")  # fmt: skip
        return redirect(url_for("account.home"))
    session.user.password_hash = None
    services().notifier.notify(session.user, "method_removed", method="Your password")
    _offer_to_sign_out_others()
    audit.record(db.session(), "password.removed", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash("Password removed: you sign in with passkeys now.", "info")
    return redirect(url_for("account.home"))


@bp.post("/account/passkeys/options")
def passkey_registration_options() -> Any:
    """Registration options for a new passkey (after a recent sign-in)."""
    session = current_session()
    if session is None:
        return jsonify(error="login_required"), 401
    if not _stepped_up(session):
        return jsonify(error="reauthenticate", redirect=_step_up_url(url_for("account.home"))), 403
    ceremony = services().passkeys.registration_options(
        session.user, browser_binding(), clock().now()
    )
    db.session.commit()
    return jsonify(challenge_id=ceremony.challenge_id, publicKey=ceremony.options)


@bp.post("/account/passkeys")
def passkey_register() -> Any:
    """Verify the new credential and store it."""
    session = current_session()
    if session is None:
        return jsonify(error="login_required"), 401
    if not _stepped_up(session):
        return jsonify(error="reauthenticate"), 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="invalid_request"), 400
    credential = body.get("credential")
    import json

    given = body.get("name") if isinstance(body.get("name"), str) else None
    try:
        passkey = services().passkeys.register(
            session.user,
            str(body.get("challenge_id", "")),
            credential if isinstance(credential, str) else json.dumps(credential),
            browser_binding(),
            given,
            request_context(),
            clock().now(),
        )
    except PasskeyError:
        db.session.commit()
        message = "The passkey could not be saved. Please try again."
        return jsonify(error="registration_failed", message=message), 400
    codes = _after_method_added(session, f"Passkey “{passkey.name}”")
    if not clean_name(given) and describe_authenticator(passkey.aaguid)[0] == UNRECOGNISED:
        # Named after this browser and the day: the account page invites a better name.
        flash(f"Passkey “{passkey.name}” added. Give it a name you will recognise, such as "
              "the phone or password manager that holds it: rename it below.", "info")  # fmt: skip
    db.session.commit()
    return jsonify(credential_id=passkey.credential_id, name=passkey.name, backup_codes=codes), 201


def _offer_to_sign_out_others() -> None:
    """After a sign-in method changes, other sessions may belong to whoever had the old one."""
    flask_session["offer_sign_out_others"] = True


def _after_method_added(session: BrowserSession, method: str) -> list[str]:
    """A new sign-in method: notify the user, end a recovery restriction, and hand out backup
    codes the first time the account gets a passkey or an authenticator app."""
    user = session.user
    services().notifier.notify(user, "method_added", method=method)
    if session.restricted:
        promote_session(session)
    _offer_to_sign_out_others()
    if services().backup_codes.has_codes(user):
        return []
    return services().backup_codes.regenerate(user, clock().now())


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
        services().passkeys.rename(passkey, request.form.get("name", ""))
    except PasskeyError:
        flash("A passkey needs a name.", "error")
        return redirect(url_for("account.home"))
    db.session.commit()
    flask_session["signal_user_details"] = True
    flash("Passkey renamed.", "info")
    return redirect(url_for("account.home"))


@bp.route("/account/passkeys/<credential_id>/remove", methods=["GET", "POST"])
def passkey_remove(credential_id: str) -> Any:
    """Remove a passkey (after a recent sign-in and a confirmation; never the last way in)."""
    session, passkey = _own_passkey(credential_id)
    if not _stepped_up(session):
        return redirect(_step_up_url(url_for("account.home")))
    if not confirmed():
        return confirm_page(
            title=f"Remove the passkey “{passkey.name}”?",
            message="You will no longer be able to sign in with it. It stays in its credential "
            "manager until you delete it there too.",
            action=url_for("account.passkey_remove", credential_id=credential_id),
            button="Remove passkey",
            cancel=url_for("account.home"),
        )
    others = [p for p in services().passkeys.passkeys_of(session.user) if p is not passkey]
    if not others and session.user.is_admin and services().policy.admin_passkey_required:
        flash("Administrators must keep a passkey: add another one before removing this one.",
              "error")  # fmt: skip
        return redirect(url_for("account.home"))
    if not others and not _other_primary_method(session, exclude="passkey"):
        flash("This is your only way to sign in, so it can't be removed. Add another passkey "
              "or a password first.", "error")  # fmt: skip
        return redirect(url_for("account.home"))
    services().passkeys.remove(passkey, request_context())
    services().notifier.notify(session.user, "method_removed", method=f"Passkey “{passkey.name}”")
    _offer_to_sign_out_others()
    db.session.commit()
    flash("Passkey removed.", "info")
    return redirect(url_for("account.home"))


# -- sessions, connected apps, activity, profile (the portal) -------------------------------------
def _session_or_login(endpoint: str) -> BrowserSession | Any:
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for(endpoint)))
    return session


@bp.get("/account/sessions")
def sessions() -> Any:
    """Where the user is signed in."""
    session = _session_or_login("account.sessions")
    if not isinstance(session, BrowserSession):
        return session
    views = portal.active_sessions(db.session(), session.user, session, clock().now(),
                                   services().sessions)  # fmt: skip
    return render_template("account/sessions.html", user=session.user, sessions=views)


@bp.route("/account/sessions/<sid>/revoke", methods=["GET", "POST"])
def session_revoke(sid: str) -> Any:
    """Sign out one session (after a confirmation); every node refuses it on its next request."""
    session = _session_or_login("account.sessions")
    if not isinstance(session, BrowserSession):
        return session
    if not confirmed():
        current = sid == session.sid
        return confirm_page(
            title="Sign out this session?" if current else "Sign out that session?",
            message="You will be signed out here, and need to sign in again."
            if current
            else "Whoever uses that browser will need to sign in again.",
            action=url_for("account.session_revoke", sid=sid[:64]),
            button="Sign out",
            cancel=url_for("account.sessions"),
        )
    if portal.revoke_session(db.session(), session.user, sid[:64], clock().now()):
        audit.record(db.session(), "session.revoked", subject_id=session.user_id,
                     context=request_context(), sid=sid[:64])  # fmt: skip
        flash("That session is signed out.", "info")
    db.session.commit()
    if sid == session.sid:
        return redirect(url_for("login.login"))
    return redirect(url_for("account.sessions"))


@bp.post("/account/sessions/revoke-others")
def sessions_revoke_others() -> Any:
    """Sign out everywhere else."""
    session = _session_or_login("account.sessions")
    if not isinstance(session, BrowserSession):
        return session
    portal.revoke_other_sessions(db.session(), session.user, session, clock().now())
    # A pending email change may be the work of one of the sessions just ended.
    services().email_changes.end_pending(session.user, clock().now(), SIGNED_OUT)
    audit.record(db.session(), "session.revoked_others", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash("You are signed out everywhere else.", "info")
    return redirect((request.form.get("then") == "home" and url_for("account.home"))
                    or url_for("account.sessions"))  # fmt: skip


@bp.get("/account/apps")
def apps() -> Any:
    """Applications the user shares their account with."""
    session = _session_or_login("account.apps")
    if not isinstance(session, BrowserSession):
        return session
    connected = portal.connected_apps(db.session(), session.user)
    return render_template(
        "account/apps.html",
        user=session.user,
        apps=connected,
        shared=shared_with_apps(db.session(), session.user, connected),
        groups=services().groups.groups_of(session.user_id),
    )


@bp.route("/account/apps/<client_id>/revoke", methods=["GET", "POST"])
def app_revoke(client_id: str) -> Any:
    """Disconnect an app (after a confirmation): its consent goes, and its refresh and access
    tokens stop working."""
    session = _session_or_login("account.apps")
    if not isinstance(session, BrowserSession):
        return session
    if not confirmed():
        connected = {app.client.client_id: app.client.name
                     for app in portal.connected_apps(db.session(), session.user)}  # fmt: skip
        name = connected.get(client_id[:64], "this app")
        return confirm_page(
            title=f"Disconnect {name}?",
            message=f"{name} loses access to your account: its tokens stop working now, and it "
            "asks for your consent again the next time you use it.",
            action=url_for("account.app_revoke", client_id=client_id[:64]),
            button="Disconnect",
            cancel=url_for("account.apps"),
        )
    if portal.disconnect_app(db.session(), session.user, client_id[:64], clock().now()):
        audit.record(db.session(), "consent.revoked", subject_id=session.user_id,
                     client_id=client_id[:64], context=request_context())  # fmt: skip
        flash("The app is disconnected.", "info")
    db.session.commit()
    return redirect(url_for("account.apps"))


@bp.get("/account/activity")
def activity() -> Any:
    """The user's security activity, newest first."""
    session = _session_or_login("account.activity")
    if not isinstance(session, BrowserSession):
        return session
    page = request.args.get("page", "1")
    number = int(page) if page.isdigit() and len(page) < 6 else 1
    events, more = portal.activity(db.session(), session.user, number)
    names = portal.client_names(db.session(), {e.client_id for e in events if e.client_id})
    return render_template(
        "account/activity.html", user=session.user, page=number, more=more,
        events=[(e, describe_event(e, names)) for e in events],
        describe=portal.describe_user_agent,
    )  # fmt: skip


@bp.route("/account/profile", methods=["GET", "POST"])
def profile() -> Any:
    """Name and email address."""
    session = _session_or_login("account.profile")
    if not isinstance(session, BrowserSession):
        return session
    if request.method == "POST":
        session.user.name = " ".join(request.form.get("name", "").split())[:200]
        audit.record(db.session(), "profile.updated", subject_id=session.user_id,
                     context=request_context())  # fmt: skip
        db.session.commit()
        flash("Name saved.", "info")
        flask_session["signal_user_details"] = True
        return redirect(url_for("account.profile"))
    return render_template(
        "account/profile.html",
        user=session.user,
        rp_id=runtime().settings.rp_id,
        passwords_allowed=services().policy.passwords_allowed,
        signal_details=flask_session.pop("signal_user_details", False),
        pending_change=services().email_changes.pending(session.user, clock().now()),
    )


@bp.post("/account/email")
def email_change() -> Any:
    """Ask to change the email: confirmed from the new address (after a step-up). The address
    must be one plain addr-spec (idp.services.email_addresses); the old address is told."""
    session = _signed_in_recently("account.profile")
    if not isinstance(session, BrowserSession):
        return session
    now = clock().now()
    try:
        change, secret = services().email_changes.request(
            session.user, request.form.get("email", "")[:1000], now,
            allow_local_domains=not runtime().settings.production,
        )  # fmt: skip
    except EmailAddressError as error:
        flash(str(error), "error")
        return redirect(url_for("account.profile"))
    link = runtime().settings.endpoint(url_for("account.email_confirm", token=secret))
    services().notifier.notify(session.user, "email_change_requested", recipient=change.new_email,
                      link=link, expires_at=change.expires_at)  # fmt: skip
    services().notifier.notify(session.user, "email_change_pending", new_email=change.new_email,
                      expires_at=change.expires_at)  # fmt: skip
    audit.record(db.session(), "email.change_requested", subject_id=session.user_id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    # The same answer whether or not the address is taken (no enumeration).
    hint = outbox_hint()
    if hint:
        flash(Markup("A confirmation link for {} was written. ").format(change.new_email) + hint,
              "info")  # fmt: skip
    else:
        flash(f"We are emailing a confirmation link to {change.new_email}. Open it to finish "
              "the change.", "info")  # fmt: skip
    return redirect(url_for("account.profile"))


@bp.post("/account/email/cancel")
def email_change_cancel() -> Any:
    """The profile's Cancel button: the pending change's link stops working."""
    session = _session_or_login("account.profile")
    if not isinstance(session, BrowserSession):
        return session
    if services().email_changes.end_pending(session.user, clock().now(), CANCELLED):
        audit.record(db.session(), "email.change_cancelled", subject_id=session.user_id,
                     context=request_context())  # fmt: skip
        flash("The email change is cancelled.", "info")
    db.session.commit()
    return redirect(url_for("account.profile"))


@bp.route("/account/email/confirm", methods=["GET", "POST"])
def email_confirm() -> Any:
    """The link from the new address: a page, and only its POST changes the email (mail scanners
    that prefetch links change nothing)."""
    token = request.values.get("token", "")[:2000]
    if request.method == "POST":
        return _confirm_email_change(token)
    # GET and HEAD (a scanner's probe) only show the page (RFC 9110 9.2.1).
    return render_template("account/email_confirm.html", token=token)


def _confirm_email_change(token: str) -> Any:
    changed = services().email_changes.confirm(token, clock().now())
    if changed is None:
        db.session.rollback()
        return render_template(
            "errors/error.html",
            title="This link does not work",
            message="It has expired, was already used or cancelled, or the address is taken.",
        ), 400
    user, old_email = changed
    services().notifier.notify(user, "email_changed", recipient=old_email, new_email=user.email)
    audit.record(db.session(), "email.changed", subject_id=user.id, context=request_context())
    db.session.commit()
    flask_session["signal_user_details"] = True
    flash("Your email address is changed.", "info")
    return redirect(url_for("account.profile"))
