"""Users: list and search, create or invite, the user page and what an admin may do there.

Thin views over ``idp.services.user_admin`` (the ``idp users`` and ``idp login-link`` commands use
the same service). Every route sits behind the blueprint's admin guard; every POST is CSRF-checked.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, url_for

from idp.admin.blueprint import bp, listed
from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import Passkey, User
from idp.services.attestation import attestation_words
from idp.services.passkey_names import describe_authenticator
from idp.services.portal import describe_user_agent
from idp.services.user_admin import (
    IssuedLink,
    UserAdmin,
    UserAdminError,
)
from idp.web import confirm_page, confirmed, url_for_secret
from idp.web.sessions import signed_out_with_removed_passkey

#: Lifetimes the admin can pick for a link (seconds); the default comes from the settings.
LINK_LIFETIMES = [(900, "15 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"), (86400, "24 hours")]


def user_admin() -> UserAdmin:
    return services().user_admin(g.admin.id, "console")


def _user(user_id: str, *, locked: bool = False) -> User:
    user = user_admin().get(user_id, locked=locked)
    if user is None:
        abort(404, description="There is no such user.")
    return user


def _lifetime() -> int:
    default = runtime().settings.login_link_ttl
    try:
        return int(request.form.get("ttl", default))
    except ValueError:
        return default


def _lifetimes() -> list[tuple[int, str]]:
    default = runtime().settings.login_link_ttl
    known = {seconds for seconds, _ in LINK_LIFETIMES}
    extra = [] if default in known else [(default, f"{default // 60} minutes (default)")]
    return sorted(LINK_LIFETIMES + extra)


@bp.get("/users")
def users() -> Any:
    """Every user, searchable by email or name, a page at a time by email (its cursor in the
    Previous and Next links), and how many match in all."""
    query = request.args.get("q", "")[:200]
    service = user_admin()
    page = listed(lambda cursor: service.listing(query, cursor))
    return render_template(
        "admin/users.html", users=page, not_set_up=service.not_set_up(page.items), query=query,
        total=service.count(query),
    )  # fmt: skip


@bp.route("/users/new", methods=["GET", "POST"])
def user_new() -> Any:
    """Create an account, or create it and invite its owner with a one-time link."""
    form: dict[str, Any] = {"email": "", "name": "", "admin": False, "mailed_only": False}
    error = None
    if request.method == "POST":
        email = request.form.get("email", "")[:320]
        name = request.form.get("name", "")[:200]
        admin = request.form.get("admin") == "on"
        mailed_only = request.form.get("mailed_only") == "on"
        form = {"email": email, "name": name, "admin": admin, "mailed_only": mailed_only}
        service = user_admin()
        try:
            if request.form.get("action") == "create":
                user = service.create(email, name=name, admin=admin)
                db.session.commit()
                flash(f"Created {user.email}. Send a login link or an invite when they need one.",
                      "info")  # fmt: skip
                return redirect(url_for("admin.user", user_id=user.id))
            user, issued = service.invite(
                email, name=name, admin=admin, ttl=_lifetime(),
                now=clock().now(), url_for_secret=url_for_secret, inviter=g.admin.email,
                mailed_only=mailed_only,
            )  # fmt: skip
        except UserAdminError as failure:
            db.session.rollback()
            error = str(failure)
        else:
            db.session.commit()
            return _issued_page(user, issued, "invite")
    return render_template(
        "admin/user_new.html", form=form, error=error, lifetimes=_lifetimes(),
        default_ttl=runtime().settings.login_link_ttl,
    ), (400 if error else 200)  # fmt: skip


def _issued_page(user: User, issued: IssuedLink, kind: str) -> Any:
    """The link, shown once to the admin to pass on by another channel (it was emailed too); an
    invite only emailed is not shown (its URL goes to the address alone)."""
    if issued.url is None:
        flash(f"The invite is being emailed to {user.email}. Accepting it confirms the address.",
              "info")  # fmt: skip
        return redirect(url_for("admin.user", user_id=user.id), code=303)
    return render_template("admin/user_link_issued.html", user=user, issued=issued, kind=kind)


@bp.get("/users/<user_id>")
def user(user_id: str) -> Any:
    """One user: sign-in methods, sessions, connected apps, live links, and the actions."""
    subject = _user(user_id)
    service = user_admin()
    now = clock().now()
    roots = runtime().relying_party.attestation_roots
    passkeys = [
        (p, describe_authenticator(p.aaguid)[1], attestation_words(p.attestation_root, roots))
        for p in service.passkeys(subject)
    ]
    return render_template(
        "admin/user.html",
        user=subject,
        passkeys=passkeys,
        totp_enabled=service.totp.is_enabled(subject),
        totp_pending=service.totp.get(subject) is not None,
        backup_codes_left=service.backup_codes.remaining(subject),
        sessions=[(s, describe_user_agent(s.user_agent)) for s in service.sessions(subject, now)],
        consents=service.consents(subject, now),
        groups=services().groups.groups_of(subject.id),
        links=service.live_links(subject, now),
        set_up=service.has_way_in(subject),
        lifetimes=_lifetimes(),
        default_ttl=runtime().settings.login_link_ttl,
        passwords_allowed=services().policy.passwords_allowed,
        is_self=subject.id == g.admin.id,
    )


def _refused(service: UserAdmin, action: str, subject: User, failure: UserAdminError) -> Any:
    """Undo the attempt, audit the refusal, and say why on the user page."""
    db.session.rollback()
    service.record_refusal(action, subject, failure)
    db.session.commit()
    flash(str(failure), "error")
    return redirect(url_for("admin.user", user_id=subject.id), code=303)


def _act(user_id: str, action: str, done: str, *, locked: bool = False) -> Any:
    """Run one admin action on a user, commit it with its audit record, and go back.
    ``locked``: the user's row read anew and held to the commit (``UserAdmin.get``)."""
    subject = _user(user_id, locked=locked)
    service = user_admin()
    now = clock().now()
    actions = {
        "disable": lambda: service.disable(subject, now),
        "enable": lambda: service.enable(subject, now),
        "promote": lambda: service.promote(subject, now),
        "demote": lambda: service.demote(subject, now),
        "revoke_passkey": lambda: service.revoke_passkey(
            subject, request.values.get("credential_id", ""), now
        ),
        "reset_totp": lambda: service.reset_totp(subject),
        "void_backup_codes": lambda: service.void_backup_codes(subject),
        "revoke_session": lambda: service.revoke_session(subject, request.form.get("sid", ""), now),
        "revoke_sessions": lambda: service.revoke_sessions(subject, now),
        "revoke_consent": lambda: service.revoke_consent(
            subject, request.form.get("client_id", ""), now
        ),
        "revoke_link": lambda: service.revoke_link(subject, request.form.get("link_id", ""), now),
    }
    try:
        actions[action]()
    except UserAdminError as failure:
        return _refused(service, action, subject, failure)
    db.session.commit()
    flash(done, "info")
    return redirect(url_for("admin.user", user_id=user_id), code=303)


@bp.post("/users/<user_id>/disable")
def user_disable(user_id: str) -> Any:
    """Disable: sessions end and tokens are revoked at once; no new code or token."""
    return _act(user_id, "disable", "Account disabled: its sessions and tokens were revoked.")


@bp.post("/users/<user_id>/enable")
def user_enable(user_id: str) -> Any:
    """Enable a disabled account again."""
    return _act(user_id, "enable", "Account enabled.")


@bp.post("/users/<user_id>/promote")
def user_promote(user_id: str) -> Any:
    """Give the admin role. The user's row is held from the read: an API change in flight on
    the member (``users:write``, which may not touch admins: docs/api.md) commits first and is
    seen here (a deleted user is a 404, not a 500 when the UPDATE finds no row)."""
    return _act(user_id, "promote", "This user is now an admin.", locked=True)


@bp.post("/users/<user_id>/demote")
def user_demote(user_id: str) -> Any:
    """Take the admin role away (never from the last active admin)."""
    return _act(user_id, "demote", "This user is no longer an admin.")


@bp.route("/users/<user_id>/passkeys/revoke", methods=["GET", "POST"])
def user_passkey_revoke(user_id: str) -> Any:
    """Remove one passkey (``credential_id``, a field or in the query) after a confirmation; the
    sessions it signed in end with it. Never refused, its last way in included."""
    credential_id = request.values.get("credential_id", "")[:1400]
    own = g.admin_session.credential_id == credential_id
    if not confirmed():
        return _confirm_passkey_removal(_user(user_id), credential_id, own)
    response = _act(user_id, "revoke_passkey", "Passkey removed: wherever it signed in, the "
                    "user is signed out.")  # fmt: skip
    if not own:
        return response
    db.session.refresh(g.admin_session)
    if g.admin_session.revoked_at is None:
        return response
    # The admin's own passkey, which signed in this console session: ended with it
    # (idp.services.sessions.end_passkey_sessions), so say so and sign in another way.
    return signed_out_with_removed_passkey(
        credential_id, "You signed in with that passkey here, so you are signed out: sign in "
        "again with another passkey.", url_for("admin.index"), code=303,
    )  # fmt: skip


def _confirm_passkey_removal(subject: User, credential_id: str, own: bool) -> Any:
    """What the removal does, and, when the passkey is the user's last way in, that it is and
    how they get back in: a one-time login link (docs/admins.md, "Rescuing a user with a one-time
    login link")."""
    passkey = db.session.get(Passkey, credential_id)
    if passkey is None or passkey.user_id != subject.id:
        abort(404)
    message = ("They will no longer be able to sign in with it, and wherever they signed in "
               "with it they are signed out.")  # fmt: skip
    if services().method_removal.leaves_no_way_in(subject, passkey):
        message += (" It is their last way in: once it is removed they cannot sign in at all. "
                    "To let them back in, send them a one-time login link from their page "
                    "(Send login link), with which they add a new passkey.")  # fmt: skip
    if own:
        message += " You signed in with it here, so you are signed out too."
    action = url_for("admin.user_passkey_revoke", user_id=subject.id, credential_id=credential_id)
    return confirm_page(
        title=f"Remove the passkey “{passkey.name}” of {subject.email}?",
        message=message,
        action=action,
        button="Remove passkey",
        cancel=url_for("admin.user", user_id=subject.id),
        nav="admin",
    )


@bp.post("/users/<user_id>/totp/reset")
def user_totp_reset(user_id: str) -> Any:
    """Remove the authenticator app; the user can set up a new one."""
    return _act(user_id, "reset_totp", "Authenticator app removed.")


@bp.post("/users/<user_id>/backup-codes/void")
def user_backup_codes_void(user_id: str) -> Any:
    """Make every backup code unusable."""
    return _act(user_id, "void_backup_codes", "Backup codes voided.")


@bp.post("/users/<user_id>/sessions/revoke")
def user_session_revoke(user_id: str) -> Any:
    """Sign the user out of one session (field ``sid``)."""
    return _act(user_id, "revoke_session", "Session ended.")


@bp.post("/users/<user_id>/sessions/revoke-all")
def user_sessions_revoke(user_id: str) -> Any:
    """Sign the user out everywhere."""
    return _act(user_id, "revoke_sessions", "Every session of this user ended.")


@bp.post("/users/<user_id>/consents/revoke")
def user_consent_revoke(user_id: str) -> Any:
    """Disconnect an app (field ``client_id``): its consent and tokens go."""
    return _act(user_id, "revoke_consent", "App disconnected; its tokens were revoked.")


@bp.post("/users/<user_id>/links/revoke")
def user_link_revoke(user_id: str) -> Any:
    """Revoke an unspent login link or invite (field ``link_id``)."""
    return _act(user_id, "revoke_link", "Link revoked.")


@bp.post("/users/<user_id>/login-link")
def user_login_link(user_id: str) -> Any:
    """ "Send login link": emailed to the user and shown here once (field ``ttl``, seconds)."""
    subject = _user(user_id)
    service = user_admin()
    try:
        issued = service.send_login_link(
            subject, ttl=_lifetime(), now=clock().now(), url_for_secret=url_for_secret
        )
    except UserAdminError as failure:
        return _refused(service, "send_login_link", subject, failure)
    db.session.commit()
    return _issued_page(subject, issued, "login")


@bp.post("/users/<user_id>/invite")
def user_invite(user_id: str) -> Any:
    """A new invite for an account that was not set up yet (older invites stop working)."""
    subject = _user(user_id)
    service = user_admin()
    try:
        issued = service.reinvite(
            subject, ttl=_lifetime(), now=clock().now(), url_for_secret=url_for_secret,
            inviter=g.admin.email, mailed_only=request.form.get("mailed_only") == "on",
        )  # fmt: skip
    except UserAdminError as failure:
        return _refused(service, "invite", subject, failure)
    db.session.commit()
    return _issued_page(subject, issued, "invite")


@bp.post("/users/<user_id>/delete")
def user_delete(user_id: str) -> Any:
    """Delete the account (field ``confirm`` must repeat its email address)."""
    subject = _user(user_id)
    if request.form.get("confirm", "").strip().lower() != subject.email:
        flash("To delete the account, type its email address.", "error")
        return redirect(url_for("admin.user", user_id=user_id), code=303)
    email = subject.email
    service = user_admin()
    try:
        service.delete(subject, clock().now())
    except UserAdminError as failure:
        return _refused(service, "delete", subject, failure)
    db.session.commit()
    flash(f"Deleted {email}.", "info")
    return redirect(url_for("admin.users"), code=303)
