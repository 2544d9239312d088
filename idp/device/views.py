"""The verification page of the device authorization grant (RFC 8628 3.3): the user, signed in
here as everywhere (passkey first), types the code their device shows, sees which app asks for
what, and approves or denies. Thin: every decision is ``idp.services.device``'s."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request

from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import BrowserSession, DeviceAuthorization
from idp.services.anonymous import refused_for
from idp.services.device import (
    USER_CODE_EXAMPLE,
    DeviceFlowService,
    format_user_code,
    normalise_user_code,
)
from idp.services.group_access import allowed_to_use
from idp.web import login_url
from idp.web.headers import allow_logo
from idp.web.sessions import current_session

bp = Blueprint("device", __name__)


def _signed_in() -> BrowserSession | None:
    """A full session: a restricted one (recovery, login link, invite) may only add a sign-in
    method and never speaks for the user to a client (as ``interaction.needs_login``)."""
    session = current_session()
    return session if session is not None and not session.restricted else None


def _enter_page(code: str, error: str | None = None) -> str:
    """The page that asks for the code; its placeholder is a code of the real alphabet."""
    return render_template("device/enter.html", code=code, error=error, example=USER_CODE_EXAMPLE)


def _to_login() -> Any:
    # Back here after signing in, with the code the link carried (RFC 8628 3.3.1).
    return redirect(login_url(request.full_path.rstrip("?")))


@bp.get("/device")
def enter() -> Any:
    """Ask for the code. A code from ``verification_uri_complete`` (a QR code, a link) is only
    filled in: the user still confirms it, so a link sent by someone else does not approve
    anything by being opened (RFC 8628 5.4, remote phishing)."""
    if _signed_in() is None:
        return _to_login()
    typed = request.args.get("user_code", "")
    code = normalise_user_code(typed)
    return _enter_page(format_user_code(code) if code else "")


@bp.post("/device")
def review() -> Any:
    """Check the typed code (counted, docs/security.md) and show what the device asks for."""
    session = _signed_in()
    if session is None:
        return _to_login()
    service = services().device_flow
    now = clock().now()
    typed = request.form.get("user_code", "")
    entry = service.enter(typed, session.user, request_context(), now)
    db.session.commit()  # the counted attempt and its audit row, whatever the outcome
    if entry.authorization is None:
        page = _enter_page(typed[:20], entry.error)
        if entry.verdict is None:
            return Response(page, status=400)
        response = Response(page, status=429)
        if not entry.verdict.locked:
            # RFC 9110 10.2.3: when a guess is counted again (the address's fixed window's end or
            # the account's backoff); a lock has no end an answer could name (an admin lifts it).
            retry = refused_for("user_code_attempts", entry.verdict.retry_after)
            response.headers["Retry-After"] = str(retry)
        return response
    refused = _refuse_unless_allowed(service, entry.authorization, session)
    if refused is not None:
        return refused
    page = render_template(
        "device/review.html",
        authorization=entry.authorization,
        client=entry.authorization.client,
        scopes=entry.authorization.scope.split(),
        user=session.user,
        code=format_user_code(normalise_user_code(typed) or ""),
    )
    # The review is this flow's consent page: the app's logo shows, as there (RFC 8628 5.4: the
    # user recognises the app before approving).
    return allow_logo(Response(page), entry.authorization.client.logo_origin)


@bp.post("/device/decide")
def decide() -> Any:
    """Approve or deny, once (the user code is spent by whichever answer comes first)."""
    session = _signed_in()
    if session is None:
        return _to_login()
    service = services().device_flow
    now = clock().now()
    authorization = service.pending(request.form.get("authorization", ""), now)
    if authorization is None:
        page = _enter_page("", GONE)
        return Response(page, status=400)
    unavailable = service.refusal(authorization)
    if unavailable is not None:
        page = _enter_page("", unavailable)
        return Response(page, status=400)
    refused = _refuse_unless_allowed(service, authorization, session)
    if refused is not None:
        return refused
    approve = request.form.get("decision") == "approve"
    decided = service.decide(authorization, user=session.user, session=session, approve=approve,
                             context=request_context(), now=now)  # fmt: skip
    db.session.commit()
    if not decided:
        page = _enter_page("", GONE)
        return Response(page, status=400)
    return render_template("device/done.html", client=authorization.client, approved=approve)


GONE = "This request was already answered or has expired. Start again on your device."


def _refuse_unless_allowed(
    service: DeviceFlowService, authorization: DeviceAuthorization, session: BrowserSession
) -> Response | None:
    """Per-app access (docs/admins.md), as in the code flow: decided once the user is known and
    before consent. The user is told the app is not open to them; the device's request stays
    pending for its own user (``DeviceFlowService.refuse_outside_groups``)."""
    client = authorization.client
    if not client.restricted_to_groups or allowed_to_use(db.session(), session.user_id, client):
        return None
    service.refuse_outside_groups(authorization, user=session.user, context=request_context())
    groups = services().groups.allowed_groups(client.client_id)
    db.session.commit()
    page = render_template(
        "oidc/access_refused.html",
        device=True,
        client=client,
        groups=groups,
        admin_email=runtime().settings.admin_email,
    )
    return Response(page, status=403)
