"""Joining pages: an admin's invite (``/invite/<secret>``) and self-service sign-up (``/signup``).

Both links follow the login links' rules: the GET shows a confirmation page and spends nothing
(mail scanners prefetch links), only the POST spends the link, once. The account's first way in
comes right after: a passkey (a restricted session whose only page is adding one), or a password
where the sign-in policy allows passwords.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for

from idp.account.blueprint import restricted_page
from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import User
from idp.services.anonymous import budget_refused
from idp.services.audit import RequestContext
from idp.services.client_addresses import budget_address
from idp.services.passwords import PasswordPolicyError
from idp.services.sign_in_policy import SignInPolicy
from idp.services.signup import NewAccount, SignupError
from idp.web.sessions import start_session

bp = Blueprint("signup", __name__)

LINK_FAILED = (
    "This link does not work",
    "It has expired or was already used. Ask for a new one.",
)


def _policy() -> SignInPolicy:
    return services().policy


def _link_failed() -> Any:
    title, message = LINK_FAILED
    return render_template("errors/error.html", title=title, message=message), 400


def _new_account(passwords: bool) -> NewAccount:
    password = request.form.get("password", "")[:1024] if passwords else ""
    return NewAccount(name=request.form.get("name", "")[:200], password=password or None)


def _signed_in(user: User, account: NewAccount) -> Any:
    """The new account's first session: with a password, a normal sign-in (or, where a second
    factor is required, a restricted one that must add it); else a passkey comes first."""
    if account.password is not None:
        restricted = runtime().settings.require_second_factor
        response = redirect(url_for("account.recover" if restricted else "account.home"))
        start_session(user, ["pwd"], response, restricted=restricted)
    else:
        # RFC 8176: the link was a one-time secret sent to the address (as for login links).
        response = redirect(url_for("signup.passkey"))
        start_session(user, ["otp"], response, passkey_only=True)
    db.session.commit()
    return response


def _joining_page(
    secret: str,
    found: Any,
    spend: Callable[[str, NewAccount, RequestContext, datetime], User | None],
    passwords: bool,
    template: str,
    **page: Any,
) -> Any:
    """An invite's or a sign-up's link page: the GET shows the form and spends nothing, the POST
    spends the link (``spend``) and signs the new account in. ``passwords``: whether the account
    may choose a password instead of a passkey (``SignInPolicy.password_signs_in``)."""
    if found is None:
        if request.method == "POST":
            # Spent, revoked or expired between the page and the POST: audited like any failure.
            spend(secret, NewAccount(name=""), request_context(), clock().now())
            db.session.commit()
        return _link_failed()
    error = None
    if request.method == "POST":
        account = _new_account(passwords)
        try:
            user = spend(secret, account, request_context(), clock().now())
        except PasswordPolicyError as failure:
            error = str(failure)
        else:
            if user is None:
                db.session.commit()  # the failure is audited
                return _link_failed()
            return _signed_in(user, account)
    return render_template(
        template, secret=secret, error=error, passwords_allowed=passwords, **page
    ), (400 if error else 200)


# -- invites --------------------------------------------------------------------------------------
@bp.route("/invite/<secret>", methods=["GET", "POST"])
def invite(secret: str) -> Any:
    """An admin's invite: choose a name (and a password where allowed), then add a passkey."""
    user = services().joining.find_invite(secret, clock().now())
    # An invite to an admin account where admins sign in with a passkey only offers no password:
    # one would open a full session of an admin without a passkey (docs/configuration.md,
    # ``admin_passkey_required``).
    passwords = user is not None and _policy().password_signs_in(user.is_admin)
    return _joining_page(
        secret, user, services().joining.accept_invite, passwords, "signup/invite.html", user=user
    )


@bp.get("/signup/passkey")
def passkey() -> Any:
    """A new account's first passkey (the restricted session's page)."""
    return restricted_page("signup/passkey.html")


# -- self-service sign-up -------------------------------------------------------------------------
def _signup_open() -> SignInPolicy:
    policy = _policy()
    if not policy.signup_enabled:
        abort(404, description="This site does not offer sign-up. Ask its administrator for an "
                               "invitation.")  # fmt: skip
    return policy


@bp.route("/signup", methods=["GET", "POST"])
def start() -> Any:
    """Sign-up, email first; the same answer whether or not the address has an account."""
    _signup_open()
    email = request.form.get("email", "")[:320]
    error = None
    if request.method == "POST":
        settings = runtime().settings
        # Budgeted by the address's /64 on IPv6 (``budget_address``): one host picks any of
        # 2**64 addresses there, each a budget of its own otherwise (RFC 4291 2.5.1).
        address = budget_address(request_context().ip_address)
        budget, now = services().signup_budget, clock().now()
        if not budget.spend("signup", address, now):
            db.session.commit()
            error = "Too many sign-up requests from your network. Please try again later."
            page = render_template("signup/start.html", email=email, error=error)
            # RFC 9110 10.2.3: when the budget's fixed window ends.
            retry = budget_refused("signup", budget.window, now)
            return page, 429, {"Retry-After": str(retry)}
        try:
            services().joining.request_signup(
                email, context=request_context(), now=clock().now(),
                url_for_secret=lambda secret: settings.endpoint(
                    url_for("signup.confirm", secret=secret)
                ),
                login_url=settings.endpoint(url_for("login.login")),
            )  # fmt: skip
        except SignupError as failure:
            error = str(failure)
        else:
            db.session.commit()
            return render_template("signup/check_email.html", email=email.strip())
    return render_template("signup/start.html", email=email, error=error), (400 if error else 200)


@bp.route("/signup/confirm/<secret>", methods=["GET", "POST"])
def confirm(secret: str) -> Any:
    """The emailed link: choose a name (and a password where allowed); the POST spends it."""
    policy = _signup_open()
    link = services().joining.find_signup(secret, clock().now())
    email = link.email if link is not None else None
    return _joining_page(
        secret, link, services().joining.complete_signup, policy.passwords_allowed,
        "signup/confirm.html", email=email,
    )  # fmt: skip
