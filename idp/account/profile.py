"""The portal's second page family: where the user is signed in, the apps they share their
account with, their security activity, and their name and email address."""

from __future__ import annotations

from typing import Any

from flask import (
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as flask_session
from markupsafe import Markup

from idp.account.blueprint import (
    bp,
    session_or_login,
    signed_in_recently,
)
from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import BrowserSession
from idp.services import audit, portal
from idp.services.activity import describe_event
from idp.services.anonymous import count_refusal
from idp.services.claims import shared_with_apps
from idp.services.display_names import display_name
from idp.services.email_addresses import EmailAddressError
from idp.services.pages import CursorError
from idp.services.users import (
    CANCELLED,
    SIGNED_OUT,
    EmailChangeLimitError,
    EmailVerificationLimitError,
)
from idp.web import confirm_page, confirmed, outbox_hint
from idp.web.sessions import current_session


@bp.get("/account/sessions")
def sessions() -> Any:
    """Where the user is signed in."""
    session = session_or_login("account.sessions")
    if not isinstance(session, BrowserSession):
        return session
    views = portal.active_sessions(db.session(), session.user, session, clock().now(),
                                   services().sessions)  # fmt: skip
    return render_template("account/sessions.html", user=session.user, sessions=views)


@bp.route("/account/sessions/<sid>/revoke", methods=["GET", "POST"])
def session_revoke(sid: str) -> Any:
    """Sign out one session (after a confirmation); every node refuses it on its next request."""
    session = session_or_login("account.sessions")
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
    session = session_or_login("account.sessions")
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
    session = session_or_login("account.apps")
    if not isinstance(session, BrowserSession):
        return session
    connected = portal.connected_apps(db.session(), session.user, clock().now())
    return render_template(
        "account/apps.html",
        user=session.user,
        apps=connected,
        shared=shared_with_apps(db.session(), session.user, connected),
        groups=services().groups.groups_of(session.user_id),
    )


@bp.route("/account/apps/<client_id>/revoke", methods=["GET", "POST"])
def app_revoke(client_id: str) -> Any:
    """Disconnect an app (after a confirmation): its consent goes, if it asked for one, and its
    refresh and access tokens stop working, offline ones included."""
    session = session_or_login("account.apps")
    if not isinstance(session, BrowserSession):
        return session
    now = clock().now()
    if not confirmed():
        connected = {app.client.client_id: app
                     for app in portal.connected_apps(db.session(), session.user, now)}  # fmt: skip
        app = connected.get(client_id[:64])
        name = app.client.name if app else "this app"
        # An app of this site asks no consent (a first-party client): the next time the user
        # opens it, a browser signed in here gets it a new code without a page (OIDC Core
        # 3.1.2.4), so the page must not promise that it asks anything.
        again = ("it asks for your consent again the next time you use it" if app is None
                 or app.consented else "it is an app of this site: the next time you open it "
                 "while signed in here, it gets access again without asking you")  # fmt: skip
        # An app listed for its remembered consent alone holds no token to stop.
        loses = ("loses access to your account: its tokens stop working now, and" if app is None
                 or app.live else "holds no access to your account now; it forgets that you "
                 "allowed it, and")  # fmt: skip
        return confirm_page(
            title=f"Disconnect {name}?",
            message=f"{name} {loses} {again}.",
            action=url_for("account.app_revoke", client_id=client_id[:64]),
            button="Disconnect",
            cancel=url_for("account.apps"),
        )
    disconnected = portal.disconnect_app(db.session(), session.user, client_id[:64], now)
    if disconnected:
        # Audited whether or not a consent went: a first-party app has none, and ending its
        # offline grants is as much the user's act (docs/architecture.md, "Invariants").
        audit.record(db.session(), "consent.revoked", subject_id=session.user_id,
                     client_id=client_id[:64], context=request_context(),
                     consent=disconnected.consent_removed,
                     grants=disconnected.grants_revoked)  # fmt: skip
        flash("The app is disconnected.", "info")
    db.session.commit()
    return redirect(url_for("account.apps"))


@bp.get("/account/activity")
def activity() -> Any:
    """The user's security activity, newest first."""
    session = session_or_login("account.activity")
    if not isinstance(session, BrowserSession):
        return session
    try:
        page = portal.activity(db.session(), session.user, request.args.get("cursor") or None)
    except CursorError:
        abort(400, description="This page's link is not valid. Start again from the first page.")
    events = page.items
    names = portal.client_names(db.session(), {e.client_id for e in events if e.client_id})
    return render_template(
        "account/activity.html", user=session.user, page=page,
        events=[(e, describe_event(e, names), portal.shows_origin(e, session.user_id))
                for e in events],
        describe=portal.describe_user_agent,
    )  # fmt: skip


@bp.route("/account/profile", methods=["GET", "POST"])
def profile() -> Any:
    """Name and email address."""
    session = session_or_login("account.profile")
    if not isinstance(session, BrowserSession):
        return session
    if request.method == "POST":
        previous, name = session.user.name, display_name(request.form.get("name"), 200)
        if name != (previous or ""):
            # OWASP ASVS 4.0 7.1.3: the name before and after (the ``name`` claim clients read),
            # as an admin's rename records them; a save that changes nothing is no event.
            session.user.name = name
            audit.record(db.session(), "profile.updated", subject_id=session.user_id,
                         context=request_context(), previous_name=previous,
                         name=name)  # fmt: skip
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
    session = signed_in_recently("account.profile")
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
    except EmailChangeLimitError as error:
        return _throttled("email_change", "email.change_requested", session.user_id, error)
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


def _throttled(budget: str, kind: str, user_id: str, error: Exception) -> Any:
    """A request a mail budget refused: counted in idp_budget_refusals_total under the budget's
    name, as every budget's refusal (docs/operations.md, "Metrics"), audited, and told."""
    count_refusal(budget)
    audit.record(db.session(), kind, outcome="failure", subject_id=user_id,
                 context=request_context(), reason="throttled")  # fmt: skip
    db.session.commit()
    flash(str(error), "error")
    return redirect(url_for("account.profile"))


@bp.post("/account/email/verify")
def email_verify() -> Any:
    """Confirm the account's own address, unconfirmed since an invite whose link was handed to
    an admin or an API caller made it: the email change's link, sent to the same address
    (``EmailChanges.confirm`` marks it verified, OIDC Core 5.1)."""
    session = session_or_login("account.profile")
    if not isinstance(session, BrowserSession):
        return session
    user = session.user
    if user.email_verified:
        return redirect(url_for("account.profile"))
    try:
        change, secret = services().email_changes.request_verification(
            user, clock().now(), allow_local_domains=not runtime().settings.production
        )
    except EmailVerificationLimitError as error:
        # A budget of its own, counted under its own name (docs/operations.md, "Metrics").
        return _throttled("email_verification", "email.verification_requested", user.id, error)
    except EmailAddressError as error:
        flash(str(error), "error")
        return redirect(url_for("account.profile"))
    link = runtime().settings.endpoint(url_for("account.email_confirm", token=secret))
    services().notifier.notify(user, "email_change_requested", recipient=change.new_email,
                               link=link, expires_at=change.expires_at)  # fmt: skip
    audit.record(db.session(), "email.verification_requested", subject_id=user.id,
                 context=request_context())  # fmt: skip
    db.session.commit()
    flash(f"A confirmation link is on its way to {user.email}.", "info")
    return redirect(url_for("account.profile"))


@bp.post("/account/email/cancel")
def email_change_cancel() -> Any:
    """The profile's Cancel button: the pending change's link stops working."""
    session = session_or_login("account.profile")
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
    # Only the account that asked confirms, signed in: a link opened by someone else (the
    # address's owner, sent it by an account that asked for their address) must not attach
    # their address, verified, to that account.
    session = current_session()
    if request.method == "POST" and session is not None:
        return _confirm_email_change(token, session)
    # GET and HEAD (a scanner's probe) only show the page (RFC 9110 9.2.1); without a session,
    # the page asks to sign in first and come back.
    sign_in = url_for("login.login", next=url_for("account.email_confirm", token=token))
    change = services().email_changes.find(token, clock().now()) if session else None
    return render_template(
        "account/email_confirm.html",
        token=token, account=session.user if session else None, sign_in=sign_in,
        same_address=change is not None and change.new_email == change.old_email,
    )  # fmt: skip


def _confirm_email_change(token: str, session: BrowserSession) -> Any:
    user_id = session.user_id
    changed = services().email_changes.confirm(token, user_id, clock().now())
    if changed is None:
        db.session.rollback()
        # Audited as every refused one-time link is (a login link's, an invite's): an expired,
        # ended or spent link, another account's, or an address taken by now (OWASP ASVS 4.0
        # 7.1.3, 7.2.1: the security events, failures included, of authentication data).
        audit.record(db.session(), "email.changed", outcome="failure", subject_id=user_id,
                     context=request_context(), reason="link_invalid")  # fmt: skip
        db.session.commit()
        return render_template(
            "errors/error.html",
            title="This link does not work",
            message="It has expired, was already used or cancelled, the address is taken, or "
            "another account asked for it: sign in with the account that asked, then open it.",
        ), 400
    user, old_email, links_ended = changed
    if user.email == old_email:  # the address confirmed, not changed (``email_verify``)
        audit.record(db.session(), "email.verified", subject_id=user.id,
                     context=request_context(), email=user.email)  # fmt: skip
        db.session.commit()
        flash("Your email address is confirmed.", "info")
        return redirect(url_for("account.profile"))
    services().notifier.notify(user, "email_changed", recipient=old_email, new_email=user.email)
    # The address before and after (OWASP ASVS 4.0 7.1.3), as a rename records the names: the
    # log names a subject by its address as it is when read (idp.services.audit), so without
    # them no row said which address the account had, nor which one took it over.
    audit.record(db.session(), "email.changed", subject_id=user.id, context=request_context(),
                 previous_email=old_email, email=user.email,
                 links_revoked=links_ended)  # fmt: skip
    db.session.commit()
    flask_session["signal_user_details"] = True
    flash("Your email address is changed.", "info")
    return redirect(url_for("account.profile"))
