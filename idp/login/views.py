"""Sign-in pages: passkeys first (autofill, button, email-first), password as the fallback."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from flask import Blueprint, jsonify, redirect, render_template, request, session, url_for

from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.login.page import login_page
from idp.models import PartialLogin, User
from idp.oidc.checks import MAX_LOGIN_HINT_LENGTH
from idp.oidc.clients import read_with_request, registered_client
from idp.oidc.views import resume_after_sign_in
from idp.services.anonymous import PASSKEY_OPTIONS_WINDOW, budget_refused
from idp.services.carried_requests import is_carried
from idp.services.login_links import LoginLinkService
from idp.services.partial_logins import SecondStepChoices
from idp.services.passkey_checks import PasskeyError
from idp.services.pending_authorizations import LivePending
from idp.services.sign_in import Account
from idp.web import page_url, safe_next
from idp.web.sessions import browser_binding, current_session, start_session

bp = Blueprint("login", __name__)

#: What a user sees when a passkey did not work; the audit log has the reason.
#: Said before anyone is identified, to every account alike (one with no password too): it names
#: no way in that only some accounts have. The sign-in page says which other ways it offers.
PASSKEY_FAILURE = "That passkey didn't work. Try again, or use another way to sign in."
PASSKEY_OPTIONS_LIMITED = "Too many sign-in attempts from your network. Try again in a while."


def _pending(pending_id: str | None, *, shown_only: bool = False) -> LivePending | None:
    """The live pending request ``pending_id``, or the request a sign-in page carries
    (idp.services.carried_requests: not stored yet); ``shown_only``: this request only shows a
    page and writes nothing, so the read is a thin one (idp.thin_reads)."""
    if not pending_id:
        return None
    if is_carried(pending_id):
        return _carried(pending_id)
    reads = runtime().reads if shown_only else None
    pending = services().pending_authorizations.live_request(pending_id, clock().now(), reads)
    if pending is not None:
        # Read with the request: the sign-in's own redirect (resume_after_sign_in) reads it no
        # more.
        read_with_request(pending.client)
    return pending


def _carried(value: str) -> LivePending | None:
    """The request a sign-in page carries, with its client as registered now (a disabled one
    too: the request is then answered as a stored one is, by ``authorize_continue``'s page)."""
    signer = runtime().request_signer
    carried = signer.read(value, clock().now()) if signer is not None else None
    client = registered_client(carried.client_id) if carried is not None else None
    if carried is None or client is None:
        return None
    return LivePending.carrying(carried, client)


def _destination(pending: LivePending | None, next_path: str | None) -> str:
    """Where a successful sign-in goes: back into the authorization request, or a local page."""
    if pending is not None:
        return url_for("oidc.authorize_continue", pending_id=pending.id)
    return safe_next(next_path) or page_url("account.home")


def _page(pending: LivePending | None, email: str, error: str | None) -> str:
    return login_page(pending, email, error, safe_next(request.values.get("next")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in: passkey autofill on the email field, or email and password."""
    pending = _pending(request.values.get("request"), shown_only=request.method != "POST")
    if request.method == "POST":
        return _password_sign_in(pending)
    # GET and HEAD (RFC 9110 9.3.2: HEAD runs the GET branch) only show the page.
    hint = request.args.get("login_hint", "")[:MAX_LOGIN_HINT_LENGTH]
    if not hint:
        # Someone signed in and sent here to sign in again (the portal's step-up, the console's
        # recent passkey) confirms who they are: the field shows the address idp knows rather
        # than an empty one to type on a phone, and Continue asks for that account's passkey.
        signed_in = current_session()
        hint = signed_in.user.email if signed_in is not None else ""
    return _page(pending, hint, None)


def _password_sign_in(pending: LivePending | None) -> Any:
    email = request.form.get("email", "")[:320]
    result = services().sign_in.password(
        email, request.form.get("password", ""), request_context(), clock().now()
    )
    account = result.account
    if account is None:
        db.session.commit()  # the failure is counted and audited
        return _page(pending, email, result.error), 401
    if pending is not None:
        # The request waits for the second step or the passkey prompt from here on, under the
        # id the addresses below name: a carried one is stored now (idp.services.carried_requests).
        services().pending_authorizations.store_carried(pending)
    destination = _destination(pending, request.form.get("next"))
    # Backup codes back up a second factor; on their own they would be spent one per sign-in.
    # The password step read which ones exist with the account (``PasswordResult.second_step``).
    if result.second_step is not None:
        # After a correct password, the second step (docs/architecture.md, the password path),
        # which finishes only while the password checked is still the user's.
        partial = services().partial_logins.begin(
            account.id, pending.id if pending else None, destination, clock().now(),
            account.password_version,
        )  # fmt: skip
        db.session.commit()
        session["partial_login"] = partial
        # The answer is the second step's page itself, not a redirect to it: one request and one
        # round trip fewer on the password path (docs/architecture.md, the password path). The
        # page puts its own address in the history (static/second_step.js), so that reloading it
        # asks for the second step again rather than sending the password a second time.
        return _second_step_shown(result.second_step, None)
    # A session on the password alone: not on a password replaced while it was checked.
    error = services().sign_in.password_unchanged(account, request_context())
    if error is not None:
        db.session.commit()  # the refusal is audited
        return _page(pending, email, error), 401
    if runtime().settings.require_second_factor or result.second_factor_lost:
        # Policy requires a second factor the user does not have yet, or the account's only one
        # was a passkey now flagged as a possible clone (``PasswordResult.second_factor_lost``):
        # a restricted session whose only way forward is adding one. Decided here, on the POST:
        # the second-step page is a GET, and a GET never spends or starts anything (RFC 9110
        # 9.2.1).
        response = redirect(url_for("account.recover"))
        start_session(account.id, ["pwd"], response, restricted=True)
        db.session.commit()
        return response
    response = redirect(_after_password_only(account, destination))
    start_session(account.id, ("pwd",), response)
    db.session.commit()
    return response


def _partial() -> PartialLogin | None:
    raw = session.get("partial_login")
    if not isinstance(raw, str):
        return None
    return services().partial_logins.live(raw, clock().now())


def _after_password_only(user: Account, destination: str) -> str:
    """The road to passkeys: offer one after a password-only sign-in, unless snoozed or off."""
    settings = runtime().settings
    now = clock().now()
    if not services().policy.passkey_prompt or user.passkey_prompt_disabled:
        return destination
    if user.passkey_prompt_snoozed_until and user.passkey_prompt_snoozed_until > now:
        return destination
    if settings.require_second_factor:
        return destination
    return url_for("login.passkey_prompt", then=destination)


@bp.route("/login/second-step", methods=["GET", "POST"])
def second_step() -> Any:
    """After a correct password: a code from the authenticator app, a passkey or a backup code."""
    raw = session.get("partial_login")
    if not isinstance(raw, str):
        return redirect(url_for("login.login"))
    partials = services().partial_logins
    error = None
    if request.method == "POST":
        service = services().sign_in
        code = request.form.get("code", "")[:64]
        now = clock().now()
        # RFC 8176: a backup code is a one-time password too.
        amr = ["pwd", "otp", "mfa"]
        if request.form.get("method") == "backup_code":
            partial = partials.live(raw, now)  # with its user
            if partial is None:
                return redirect(url_for("login.login"))
            result = service.backup_code(partial.user, code, request_context(), now)
            if result.ok:
                return _finish_partial(partial.id_hash, partial.next_path,
                                       partial.pending_request_id, partial.user, amr,
                                       backup_code=True)  # fmt: skip
            error = result.error
        else:
            # The partial sign-in, its user's state and their authenticator app: one read, as
            # values (no ORM object: docs/performance.md).
            found = partials.live_for_code(raw, now)
            if found is None:
                return redirect(url_for("login.login"))
            error = service.totp_code(found.user_id, found.user_active, code, request_context(),
                                      now, found.totp)  # fmt: skip
            if error is None:
                return _finish_partial(found.id_hash, found.next_path, found.pending_request_id,
                                       found.user_id, amr)  # fmt: skip
        db.session.commit()
    # GET and HEAD show the page and change nothing (RFC 9110 9.2.1); so does a wrong code.
    return _second_step_page(raw, error)


def _second_step_page(raw: str, error: str | None) -> Any:
    """The second step's page for the partial sign-in ``raw``, with ``error`` (a 401) or without;
    back to the sign-in page when there is no second step to take. The partial sign-in, its
    user's address and the factors the page offers: one read."""
    choices = services().partial_logins.live_choices(raw, clock().now())
    if choices is None:
        return redirect(url_for("login.login"))
    return _second_step_shown(choices, error)


def _second_step_shown(choices: SecondStepChoices, error: str | None) -> Any:
    """The second step's page offering ``choices`` (the partial sign-in's read, or the password
    step's read of the account when the password's POST answers with it)."""
    if not (choices.totp or choices.passkey or choices.backup_code):
        # The second factor went away after the password step (removed meanwhile, or its
        # passkey flagged and no backup code left): start over.
        return redirect(url_for("login.login"))
    return render_template(
        "login/second_step.html", email=choices.email, factors=choices, error=error
    ), (401 if error else 200)


def _finish_partial(
    id_hash: str, next_path: str | None, pending_request_id: str | None, user: User | str,
    amr: list[str], *, backup_code: bool = False,
) -> Any:  # fmt: skip
    """Spend the partial sign-in ``id_hash`` and sign ``user`` (or the user of that id) in, then
    back to ``next_path`` or the authorization request ``pending_request_id`` it was for;
    ``backup_code``: the second step was a backup code."""
    if not services().partial_logins.spend(id_hash, clock().now()):
        # Another second step finished it first. The code checked here stays spent and its
        # audit row stays written (RFC 6238 5.2; docs/security.md): committed all the same.
        db.session.commit()
        return redirect(url_for("login.login"))
    session.pop("partial_login", None)
    response = redirect(next_path or url_for("account.home"))
    start_session(user, amr, response, backup_code=backup_code)
    _resume_in_this_request(response, pending_request_id)
    db.session.commit()
    return response


def _resume_in_this_request(response: Any, pending_request_id: str | None) -> None:
    """A second step made for an authorization request decides the way back with the new
    session, as a passkey sign-in does (``resume_after_sign_in``): the client's redirect URI
    with the code, or the consent page, without the browser loading ``/authorize/continue``
    first. A request no longer there leaves ``response`` going there, which says so."""
    pending = _pending(pending_request_id)
    if pending is not None:
        response.location = resume_after_sign_in(pending)


@bp.route("/login/recover", methods=["GET", "POST"])
def recover() -> Any:
    """ "Can't access your account?": email + backup code, then a new passkey or app."""
    error = None
    email = request.values.get("email", "")[:320]
    if request.method == "POST":
        result = services().sign_in.recover(
            email, request.form.get("code", "")[:64], request_context(), clock().now()
        )
        if result.user is not None:
            # The session's only way forward is adding a way in: an authenticator app is one
            # only beside a password that signs in (idp.services.method_removal), so without
            # such a password it may add a passkey only.
            passkey_only = not services().method_removal.password_is_a_way_in(result.user)
            response = redirect(url_for("account.recover"))
            start_session(result.user, ["otp"], response, restricted=True,
                          passkey_only=passkey_only, backup_code=True)  # fmt: skip
            db.session.commit()
            return response
        db.session.commit()
        error = result.error
    return render_template("login/recover.html", email=email, error=error), (401 if error else 200)


@bp.route("/login/passkey-prompt", methods=["GET", "POST"])
def passkey_prompt() -> Any:
    """After a password sign-in: create a passkey, not now (snooze), or don't ask again."""
    then = safe_next(request.values.get("then")) or url_for("account.home")
    current = current_session()
    if current is None:
        return redirect(url_for("login.login"))
    if current.restricted:
        # A restricted session (recovery, login link, invite, sign-up) may only add a way in
        # (docs/security.md, "Sessions"): it changes no setting of
        # the account, so it goes back to its one page, as in the portal.
        return redirect(url_for("account.recover"))
    if request.method == "POST":
        choice = request.form.get("choice")
        user = current.user
        if choice == "never":
            user.passkey_prompt_disabled = True
        elif choice == "later":
            days = services().policy.passkey_prompt_snooze_days
            user.passkey_prompt_snoozed_until = clock().now() + timedelta(days=days)
        db.session.commit()
        return redirect(then)
    # WebAuthn L3 5.1.3: a conditional create is the password manager's, which attests nothing
    # ("none"): with attestation roots (idp.services.attestation) it would be refused, so the
    # prompt offers only the button's ceremony then.
    attested = bool(runtime().relying_party.attestation_roots)
    return render_template("login/passkey_prompt.html", then=then, conditional_create=not attested)


@bp.post("/login/passkey/options")
def passkey_options() -> Any:
    """WebAuthn request options. Anonymous (autofill, the passkey button, email-first): a
    discoverable credential, the same answer whatever email was typed (PasskeyService
    ``authentication_options`` says why). The second step after a correct password
    (``partial``): that user's passkeys."""
    body = request.get_json(silent=True)
    user: User | None = None
    if isinstance(body, dict) and body.get("partial"):
        partial = _partial()
        user = partial.user if partial is not None else None
    # Each answer stores a challenge: an address gets a budget of them (docs/operations.md).
    now = clock().now()
    if not services().storage_budgets.passkey_options(request_context().ip_address, now):
        db.session.commit()  # the counted request
        response = jsonify(error="rate_limited", message=PASSKEY_OPTIONS_LIMITED)
        # RFC 9110 10.2.3: when the budget's fixed window ends, not the whole window.
        retry = budget_refused("passkey_options", PASSKEY_OPTIONS_WINDOW, now)
        response.headers["Retry-After"] = str(retry)
        return response, 429
    ceremony = services().passkeys.authentication_options(browser_binding(), now, user=user)
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
        signed_in = services().passkeys.authenticate(
            str(body.get("challenge_id", "")),
            credential if isinstance(credential, str) else _json_text(credential),
            browser_binding(),
            request_context(),
            clock().now(),
        )
    except PasskeyError as error:
        db.session.commit()  # the spent challenge and the audited failure persist
        payload: dict[str, Any] = {"error": "passkey_failed", "message": PASSKEY_FAILURE}
        # Signal API: only when no account at all owns the credential may the browser forget it.
        if error.reason == "unknown_credential" and isinstance(credential, dict):
            payload["unknown_credential_id"] = credential.get("id")
        return jsonify(payload), 400
    # The owner proved who they are with a passkey: the wrong codes typed at their second
    # factors and recovery count no more, and their locks lift (NIST SP 800-63B 5.2.2).
    user = signed_in.user
    services().sign_in.owner_proved(user.id, user.email, request_context())
    amr = list(signed_in.amr)
    destination: str | None = None
    pending: LivePending | None = None
    partial = _partial() if body.get("partial") else None
    if (
        partial is not None
        and partial.user_id == signed_in.user.id
        and services().partial_logins.spend(partial.id_hash, clock().now())
    ):
        # The second step after a correct password: back to where the password step was going
        # (an authorization request of a relying party, say).
        session.pop("partial_login", None)
        destination = partial.next_path or url_for("account.home")
        amr = ["pwd", *amr]
        # For an authorization request: the way back is decided below, as for a passkey alone.
        pending = _pending(partial.pending_request_id)
    else:
        pending = _pending(str(body.get("request") or ""))
        if pending is None:
            destination = _destination(None, str(body.get("next") or ""))
    response = jsonify()
    start_session(signed_in.user, amr, response, credential_id=signed_in.passkey.credential_id)
    if pending is not None:
        # Signed in for an authorization request: the way back is decided now, with the new
        # session (docs/architecture.md, a passkey sign-in step by step): the client's redirect
        # URI with the code, unless a page must be shown first.
        destination = resume_after_sign_in(pending)
    db.session.commit()
    response.set_data(json.dumps({"redirect": destination}))
    return response


def _json_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict) else ""


@bp.get("/.well-known/webauthn")
def related_origins() -> Any:
    """WebAuthn L3 5.11 Related Origin Requests: the origins that may use this RP ID."""
    response = jsonify(origins=list(runtime().settings.origins))
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/.well-known/passkey-endpoints")
def passkey_endpoints() -> Any:
    """W3C Passkey Endpoints: where credential managers send users to add or manage passkeys."""
    settings = runtime().settings
    account = settings.endpoint(url_for("account.home"))
    response = jsonify(enroll=account, manage=account)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.route("/login/link/<secret>", methods=["GET", "POST"])
def login_link(secret: str) -> Any:
    """A one-time login link: GET shows a confirmation page, only the POST spends the link
    (mail scanners prefetch links); then a restricted session must register a new passkey."""
    links = services().login_links
    if request.method == "POST":
        return _spend_login_link(links, secret)
    # GET and HEAD (a scanner's probe) only look the link up (RFC 9110 9.2.1).
    link = links.find_live(secret, clock().now())
    if link is None:
        return render_template(
            "errors/error.html",
            title="This sign-in link does not work",
            message="It has expired, was already used or was revoked. Ask for a new one.",
        ), 400
    return render_template("login/link.html", email=link.user.email, secret=secret)


def _spend_login_link(links: LoginLinkService, secret: str) -> Any:
    user = links.spend(secret, request_context(), clock().now())
    if user is None:
        db.session.commit()  # the failure is audited
        return render_template(
            "errors/error.html",
            title="This sign-in link does not work",
            message="It has expired, was already used or was revoked. Ask for a new one.",
        ), 400
    # Using a login link is audited (``spend``) and the user is told (docs/admins.md, "Rescuing a
    # user with a one-time login link").
    services().notifier.notify(user, "login_link_used")
    response = redirect(url_for("account.recover"))
    # After a login link the user registers a new passkey before anything else (same section).
    start_session(user, ["otp"], response, passkey_only=True)
    db.session.commit()
    return response
