"""The portal's blueprint and what its page families share: the step-up rule, the restriction
that keeps a recovery session on the pages that add a way in, and what follows a change of
sign-in methods."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session

from idp import checkpoints
from idp.composition import clock, services
from idp.extensions import db
from idp.models import BrowserSession
from idp.services.assurance import ACR_PHISHING_RESISTANT
from idp.services.method_removal import MethodRemoval
from idp.services.portal import step_up_satisfied, strongest_acr
from idp.services.user_locks import lock_user_row
from idp.web import login_url
from idp.web.sessions import current_session, promote_session

bp = Blueprint("account", __name__)

#: Where a restricted session that added a way in has been promoted, before the account's first
#: backup codes are decided (tests hold it here: idp.checkpoints).
PROMOTED_CHECKPOINT = "account.promoted"


def stepped_up(session: BrowserSession) -> bool:
    """The portal's step-up (docs/users/managing-sign-in-methods.md, "Why some actions ask you to
    sign in again"): a sign-in within 5 minutes, as strong as the user's strongest method (a
    restricted session: within 5 minutes, whatever its strength; see ``step_up_satisfied``)."""
    return step_up_satisfied(db.session(), session, clock().now())


def step_up_url(next_path: str) -> str:
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
    return login_url(next_path)


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


def signed_in_recently(next_endpoint: str) -> BrowserSession | Any:
    """The session if it passed the step-up rule, else a redirect to sign in again and then to
    ``next_endpoint``: an action that asks first names itself, so that the sign-in leads to its
    question (a GET), not to the top of the account page with nothing said of what to do."""
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for(next_endpoint)))
    if not stepped_up(session):
        return redirect(step_up_url(url_for(next_endpoint)))
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
    if not stepped_up(session):
        # Past the step-up window it can no longer add a method (docs/security.md, Sessions).
        return render_template("account/restricted_expired.html", user=session.user)
    return render_template(template, user=session.user, session=session)


def session_or_login(endpoint: str) -> BrowserSession | Any:
    session = current_session()
    if session is None:
        return redirect(url_for("login.login", next=url_for(endpoint)))
    return session


#: ``/account?resume=add-passkey``: where "Add a passkey" comes back to after the sign-in it
#: asked for (a step-up, or a session that had ended). Once signed in, the page says to press the
#: button again (a passkey is only created at the user's press) and account.js puts back the name
#: typed before, kept in this tab's sessionStorage, and brings the button into view.
RESUME_ADD_PASSKEY = "add-passkey"


def method_removal() -> MethodRemoval:
    return services().method_removal


def refused_at(field: str, message: str, anchor: str) -> Any:
    """Back to the account page with ``message`` under the control ``field`` it is about, the
    page scrolled to ``anchor`` (its section): at the top of the page, on a phone, the error was
    a screen or two away from the field at the bottom."""
    flask_session["field_error"] = {"for": field, "message": message}
    return redirect(url_for("account.home", _anchor=anchor))


def offer_to_sign_out_others() -> None:
    """After a sign-in method changes, other sessions may belong to whoever had the old one."""
    flask_session["offer_sign_out_others"] = True


def after_method_added(
    session: BrowserSession, method: str, credential_id: str | None = None
) -> list[str] | None:
    """A new sign-in method: end a recovery restriction, notify the user, and hand out backup
    codes the first time the account gets a passkey or an authenticator app. None: the
    restricted session ended while the method was being added; the caller keeps nothing."""
    user = session.user
    if session.restricted:
        # The user's row before the session's, in the order every change of sign-in methods
        # takes them (idp.services.user_locks): a password changed or removed meanwhile holds
        # the row and then ends this session (idp.services.sessions.end_password_sessions);
        # promoting first, each waited for the other on PostgreSQL.
        lock_user_row(db.session(), user)
        if promote_session(session, credential_id) is None:
            return None
    checkpoints.reached(PROMOTED_CHECKPOINT)
    services().notifier.notify(user, "method_added", method=method)
    offer_to_sign_out_others()
    return services().backup_codes.first_set(user, clock().now())
