"""The OpenID Provider's endpoints. Thin: checks live in ``checks``, decisions in
``interaction``, storage in ``idp.services``; Authlib runs the token side."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import (
    Response,
    abort,
    redirect,
    render_template,
    request,
    url_for,
)

from idp import checkpoints
from idp.composition import clock, request_context, runtime, services
from idp.extensions import csrf, db
from idp.login.page import login_page
from idp.models import Client, PendingAuthorization
from idp.oidc.blueprint import bp
from idp.oidc.checks import (
    AuthorizationRequest,
    check_stored_request,
    parse_authorization_request,
)
from idp.oidc.clients import query_client
from idp.oidc.errors import AuthorizationError, error_description
from idp.oidc.hints import hint_in_user_ids
from idp.oidc.interaction import InteractionState, Next, decide, needs_login
from idp.oidc.pending_open import open_pending
from idp.oidc.pushed import check_context, names_pushed_request, pushed_request
from idp.services import audit
from idp.services.anonymous import count_refusal
from idp.services.grants import CodeRequest
from idp.services.group_access import allowed_to_use
from idp.services.pending_authorizations import LivePending, PendingAuthorizations
from idp.web import acts_on_get
from idp.web.headers import allow_logo
from idp.web.same_site import posted_again, posted_without_the_session
from idp.web.sessions import current_session, forget_session

log = logging.getLogger(__name__)

#: Where a code is held, in tests, after its session was accepted and before anything of the code
#: is written (idp.checkpoints).
ISSUE_CODE_CHECKPOINT = "authorize.issue_code"


# -- authorization endpoint -----------------------------------------------------------------------
@bp.route("/authorize", methods=["GET", "POST"])
@csrf.exempt  # OIDC Core 3.1.2.1 allows POST from the relying party's page
@acts_on_get
def authorize() -> Any:
    """Authorization endpoint (RFC 6749 4.1.1, OIDC Core 3.1.2)."""
    if posted_without_the_session(request):
        # Posted by the relying party's page: the browser withheld the session cookie
        # (SameSite=Lax); posted again from idp's page, it comes along (idp.web.same_site).
        return posted_again(request)
    params = (request.form if request.method == "POST" else request.args).to_dict(flat=False)
    if names_pushed_request(params):
        # RFC 9126 4: a request pushed before (idp.oidc.pushed), spent here once; its sign-in
        # page is /login's, which a reload finds again without the spent request_uri.
        try:
            auth_request = pushed_request(params, clock().now())
        except AuthorizationError as error:
            return _error_response(error)
        return _proceed(auth_request, None, pushed=True)
    try:
        auth_request = parse_authorization_request(params, check_context())
    except AuthorizationError as error:
        return _error_response(error)
    return _proceed(auth_request, None)


@bp.get("/authorize/continue/<pending_id>")
@acts_on_get
def authorize_continue(pending_id: str) -> Any:
    """Resume a pending authorization request after sign-in or consent."""
    pending = _live_pending(pending_id)
    return _proceed(AuthorizationRequest.from_params(pending.params), pending)


def _pending_requests() -> PendingAuthorizations:
    return services().pending_authorizations


def _live_pending(pending_id: str) -> PendingAuthorization:
    pending = _pending_requests().live(pending_id, clock().now())
    if pending is None:
        abort(
            400,
            description="This sign-in request has expired or was already completed. "
            "Go back to the application and start again.",
        )
    return pending


def resume_after_sign_in(pending: PendingAuthorization | LivePending) -> str:
    """Where a sign-in made for ``pending`` sends the browser, decided in the sign-in's own request
    so that the browser does not load ``/authorize/continue`` first: the client's redirect URI
    with the code (or a redirectable error, RFC 6749 4.1.2 and 4.1.2.1), or the consent page.
    When idp must show a page instead (a form_post response, the access refusal, an error page)
    nothing is decided here and the browser goes through ``authorize_continue``, which shows it."""
    location = _proceed(AuthorizationRequest.from_params(pending.params), pending, url_only=True)
    if location is None and isinstance(pending, LivePending):
        # The page is authorize_continue's: a carried request is stored for it to find.
        _pending_requests().store_carried(pending)
    return location or url_for("oidc.authorize_continue", pending_id=pending.id)


def _proceed(
    auth_request: AuthorizationRequest,
    pending: PendingAuthorization | LivePending | None,
    *,
    url_only: bool = False,
    consent_withdrawn: bool = False,
    pushed: bool = False,
) -> Any:
    """The next step of the request: a response, or with ``url_only`` the address a redirect
    would send the browser to (None, before anything is changed, when the answer is a page).
    ``consent_withdrawn``: the consent this request read was gone when its code was to be
    issued (the app disconnected meanwhile): one given on this request's consent page counts
    no more either. ``pushed``: the request came by a request_uri (RFC 9126 4), which a reload
    of this address cannot spend again: the sign-in page is /login's, not this response."""
    client = query_client(auth_request.client_id)
    if client is None:
        if url_only:
            return None
        abort(400, description="The application that sent you here is not registered.")
    if pending is not None:
        # A stored request is answered under the registration as it stands now: a redirect URI
        # removed while it waited (a lost domain) gets no code, only the page, and a scope taken
        # from the client is not granted (RFC 6749 3.1.2.3 and 3.3, OIDC Core 3.1.2.6).
        try:
            auth_request = check_stored_request(auth_request, client, check_context())
        except AuthorizationError as error:
            return None if url_only else _error_response(error)
    session = current_session()
    auth_request = hint_in_user_ids(auth_request, client, session)  # OIDC Core 8.1
    consented: set[str] | None = None
    # First-party clients are never asked for consent (interaction.needs_consent): nothing to read.
    if session is not None and not client.first_party:
        consented = _pending_requests().consented_scopes(session.user_id, client.client_id)
    state = InteractionState(
        started_at=pending.created_at if pending else None,
        consent_given=bool(pending and session and pending.consented_by == session.user_id)
        and not consent_withdrawn,
    )
    now = clock().now()
    if (
        session is not None
        and client.restricted_to_groups
        and not needs_login(auth_request, session, state, now)
        and not allowed_to_use(db.session(), session.user_id, client)
    ):
        # Per-app access (docs/admins.md): decided once the user is known and before consent, so
        # that no one is asked to share anything with an app that will refuse them.
        if url_only:
            return None  # the refusal is a page of idp's
        return _refuse_access(auth_request, client, session.user_id, pending, now)
    try:
        next_step = decide(auth_request, client, session, consented, state, now)
    except AuthorizationError as error:
        if url_only:
            return None
        error.redirect_uri = auth_request.redirect_uri
        error.state = auth_request.state
        error.response_mode = auth_request.response_mode
        return _error_response(error)

    if next_step is not Next.ISSUE_CODE:
        if pending is None and next_step is Next.LOGIN and not url_only and not pushed:
            # The sign-in page is this response (docs/architecture.md, a passkey sign-in step by
            # step): the browser loads it without a redirect to /login first, one round trip
            # fewer on every sign-in. The page carries the request, signed, and nothing is
            # stored until a sign-in brings it back (idp.services.carried_requests): showing it
            # writes nothing. Referrer-Policy no-referrer keeps this address (the client's state
            # and nonce) from the page's own requests, and the page is no-store as every page
            # (idp.web.headers).
            signer = runtime().request_signer
            assert signer is not None, "Container.build gives every app its request signer"
            carried = signer.carry(client.client_id, auth_request.to_params(), now,
                                   runtime().settings.pending_request_ttl)  # fmt: skip
            # Bounded already: idp.oidc.checks drops a hint over MAX_LOGIN_HINT_LENGTH.
            return login_page(LivePending.carrying(carried, client),
                              auth_request.login_hint or "", None, None)  # fmt: skip
        # The address's count is committed with the pending request it pays for (one commit,
        # idp.oidc.pending_open): the row lock the count takes serialises the address's parallel
        # requests as a commit of its own did, and a request that stores nothing costs no count.
        # Redis counts at once, as always.
        if pending is None:
            pending_id = open_pending(
                client.client_id, auth_request.to_params(), request_context().ip_address, now,
                runtime().settings.pending_request_ttl,
            )  # fmt: skip
            if pending_id is None:
                # docs/operations.md, "Storage budgets": this address has opened its share of
                # pending requests. RFC 6749 4.1.2.1 temporarily_unavailable, sent back to the
                # client.
                count_refusal("pending_authorization")
                over_budget = AuthorizationError(
                    "temporarily_unavailable",
                    "Too many sign-in requests from this network. Try again in a few minutes.",
                )
                over_budget.redirect_uri = auth_request.redirect_uri
                over_budget.state = auth_request.state
                over_budget.response_mode = auth_request.response_mode
                return _error_response(over_budget)
        else:
            if isinstance(pending, LivePending):
                # A carried request waits from here on: stored, so that the address below finds
                # it (idp.services.carried_requests).
                _pending_requests().store_carried(pending)
            pending_id = pending.id
        if next_step is Next.LOGIN:
            location = url_for(
                "login.login", request=pending_id, login_hint=auth_request.login_hint
            )
        else:
            location = url_for("oidc.consent", request=pending_id)
        return location if url_only else redirect(location)

    assert session is not None
    if url_only and auth_request.response_mode != "query":
        return None  # OAuth 2.0 Form Post Response Mode 2: a page, shown by authorize_continue
    checkpoints.reached(ISSUE_CODE_CHECKPOINT)
    if not services().sessions.stands(session):
        # Ended since it was read (signed out in another tab, ended by an admin): no code in it
        # (Back-Channel Logout 1.0 2.7); the request goes on as one without a session.
        forget_session()
        return _proceed(auth_request, pending, url_only=url_only, pushed=pushed)
    if not client.first_party and not _pending_requests().consent_stands(
        session.user_id, client.client_id, auth_request.scope
    ):
        # Disconnected since it was read (OIDC Core 3.1.2.4): no code from a consent that no
        # longer exists, nor a grant the Disconnect never saw; the request asks again.
        return _proceed(auth_request, pending, url_only=url_only, consent_withdrawn=True,
                        pushed=pushed)  # fmt: skip
    # The pending request is spent once: a replayed "continue" URL cannot mint a second code.
    if pending is not None and not _pending_requests().spend(pending, now):
        if url_only:
            return None  # authorize_continue shows the page; the sign-in itself stands
        abort(400, description="This sign-in request was already completed.")
    code, stored = services().grants.new_code(
        user=session.user,
        client=client,
        session=session,
        request=CodeRequest(
            redirect_uri=auth_request.redirect_uri,
            scope=auth_request.scope,
            nonce=auth_request.nonce,
            code_challenge=auth_request.code_challenge,
            code_challenge_method=auth_request.code_challenge_method,
            dpop_jkt=auth_request.dpop_jkt,
        ),
        ttl=runtime().settings.code_ttl,
        now=now,
    )
    # The code, its grant and this event: one statement on PostgreSQL (audit.write's ``after``).
    audit.write(
        db.session(),
        "authorization.code_issued",
        subject_id=session.user_id,
        client_id=client.client_id,
        context=request_context(),
        after=stored,
        scope=auth_request.scope,
        # How the user signed in (RFC 8176), for the activity page's "with a passkey".
        amr=list(session.amr or []),
    )
    db.session.commit()
    values = [("code", code), ("state", auth_request.state)]
    if url_only:
        return _redirect_location(auth_request.redirect_uri, values)
    return _authorization_response(auth_request.redirect_uri, auth_request.response_mode, values)


def _refuse_access(
    auth_request: AuthorizationRequest,
    client: Client,
    user_id: str,
    pending: PendingAuthorization | LivePending | None,
    now: datetime,
) -> Any:
    """The user is outside the client's allowed groups: no code. RFC 6749 4.1.2.1
    ``access_denied`` goes back to the client with ``state`` and ``iss`` (RFC 9207 2); an
    interactive request shows idp's page first, saying which app refused and whom to ask, and
    ``prompt=none`` (OIDC Core 3.1.2.6: no page may be shown) gets the redirect at once."""
    if pending is not None:
        _pending_requests().spend(pending, now)
    audit.record(
        db.session(),
        "authorization.access_denied",
        outcome="failure",
        subject_id=user_id,
        client_id=client.client_id,
        context=request_context(),
        reason="not_in_allowed_groups",
        prompt_none="none" in auth_request.prompt,
    )
    groups = services().groups.allowed_groups(client.client_id)
    db.session.commit()
    error = AuthorizationError(
        "access_denied", f"You are not in a group that may use {client.name}."
    )
    error.redirect_uri = auth_request.redirect_uri
    error.state = auth_request.state
    error.response_mode = auth_request.response_mode
    if "none" in auth_request.prompt:
        return _error_response(error)
    # RFC 6749 4.1.2.1: the client's name, an admin's words, in a description's characters.
    values = [("error", error.error), ("error_description", error_description(error.description)),
              ("state", error.state), ("iss", runtime().settings.issuer)]  # fmt: skip
    values = [(k, v) for k, v in values if v is not None]
    parts = urlsplit(auth_request.redirect_uri)
    query = f"{parts.query}&{urlencode(values)}" if parts.query else urlencode(values)
    page = render_template(
        "oidc/access_refused.html",
        client=client,
        groups=groups,
        admin_email=runtime().settings.admin_email,
        form_post=auth_request.response_mode == "form_post",
        action=auth_request.redirect_uri,
        fields=values,
        return_url=urlunsplit(parts._replace(query=query)),
    )
    return Response(page, status=403)


def _error_response(error: AuthorizationError) -> Any:
    if not error.redirectable or error.redirect_uri is None:
        # The page is the only report of what went wrong (RFC 6749 4.1.2.1: nothing is sent to
        # an unverified redirect URI): the operator's log says it too.
        log.warning("authorization request refused: %s", error.description)
        return render_template("oidc/error.html", message=error.description), 400
    # RFC 6749 4.1.2.1: sent to the client, the description may quote the request (its
    # response_mode, a repeated parameter's name) in a description's characters only.
    description = error_description(error.description)
    return _authorization_response(
        error.redirect_uri,
        error.response_mode,
        [("error", error.error), ("error_description", description), ("state", error.state)],
    )


def _authorization_response(
    redirect_uri: str, response_mode: str, params: list[tuple[str, str | None]]
) -> Any:
    # RFC 9207 2: the issuer identifies who answered, in success and error responses alike.
    values = [(k, v) for k, v in params if v is not None]
    values.append(("iss", runtime().settings.issuer))
    if response_mode == "form_post":
        # OAuth 2.0 Form Post Response Mode 2: an auto-submitting form to the redirect URI.
        return Response(
            render_template("self_posting_form.html", heading="Returning to the application",
                            form_id="form-post-response", action=redirect_uri, fields=values)
        )  # fmt: skip
    return redirect(_redirect_location(redirect_uri, params), code=302)


def _redirect_location(redirect_uri: str, params: list[tuple[str, str | None]]) -> str:
    """The redirect URI with the response's parameters in its query (RFC 6749 4.1.2), ``iss``
    last (RFC 9207 2)."""
    values = [(k, v) for k, v in params if v is not None]
    values.append(("iss", runtime().settings.issuer))
    parts = urlsplit(redirect_uri)
    query = f"{parts.query}&{urlencode(values)}" if parts.query else urlencode(values)
    return urlunsplit(parts._replace(query=query))


# -- consent --------------------------------------------------------------------------------------
@bp.route("/consent", methods=["GET", "POST"])
def consent() -> Any:
    """Ask the user to share the requested scopes with a third-party client (OIDC Core 3.1.2.4)."""
    pending = _live_pending(request.values.get("request", ""))
    session = current_session()
    if session is None or session.restricted:
        # A restricted session (recovery, login link, invite, sign-up confirmation) may only add
        # a sign-in method: it never speaks for the user to a client (as in
        # ``interaction.needs_login``), so it neither sees nor grants consent. Sign in fully.
        return redirect(url_for("login.login", request=pending.id))
    client = query_client(pending.client_id)
    if client is None or (
        client.restricted_to_groups and not allowed_to_use(db.session(), session.user_id, client)
    ):
        # OIDC Core 3.1.2.4: consent is asked for, and given to, a client idp serves and the user
        # may use. One disabled since the request was stored, or limited to groups the user is
        # not (or no longer) in, is neither shown nor consented to: the request answers as
        # ``_proceed`` does (the error page, or the refusal before any consent).
        return redirect(url_for("oidc.authorize_continue", pending_id=pending.id))
    auth_request = AuthorizationRequest.from_params(pending.params)
    try:  # as in ``_proceed``: the registration as it stands, for the page and the answer
        auth_request = check_stored_request(auth_request, client, check_context())
    except AuthorizationError as unregistered:
        return _error_response(unregistered)
    if request.method == "POST":
        if request.form.get("decision") != "allow":
            _pending_requests().spend(pending, clock().now())
            audit.record(
                db.session(),
                "consent.denied",
                subject_id=session.user_id,
                client_id=pending.client_id,
                context=request_context(),
            )
            db.session.commit()
            error = AuthorizationError("access_denied", "The user did not allow access.")
            error.redirect_uri = auth_request.redirect_uri
            error.state = auth_request.state
            error.response_mode = auth_request.response_mode
            return _error_response(error)
        services().grants.remember_consent(
            session.user_id, pending.client_id, auth_request.scope.split(), clock().now()
        )
        _pending_requests().consent_given(pending, session.user_id)
        audit.record(
            db.session(),
            "consent.granted",
            subject_id=session.user_id,
            client_id=pending.client_id,
            context=request_context(),
            scope=auth_request.scope,
        )
        db.session.commit()
        return redirect(url_for("oidc.authorize_continue", pending_id=pending.id))
    response = Response(
        render_template(
            "oidc/consent.html",
            client=pending.client,
            scopes=auth_request.scope.split(),
            pending_id=pending.id,
            user=session.user,
        )
    )
    return allow_logo(response, pending.client.logo_origin)
