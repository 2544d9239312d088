"""The OpenID Provider's endpoints outside the interactive authorization: discovery and JWKS,
the token side that Authlib runs (token, device authorization, revocation, introspection),
userinfo, and RP-initiated logout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2 import OAuth2Error
from flask import (
    Request,
    Response,
    g,
    jsonify,
    render_template,
    request,
)

from idp.composition import runtime
from idp.extensions import csrf, db
from idp.oidc.blueprint import bp, oauth_server
from idp.oidc.client_auth import token_client
from idp.oidc.clients import query_client
from idp.oidc.discovery import provider_metadata
from idp.oidc.dpop import (
    DPOP_HEADER,
    ProofBudgetSpentError,
    checked_proof,
    resource_proof_refusal,
    resource_refusal,
    spend_proof,
    token_refusal,
    with_nonce,
)
from idp.oidc.endpoints import bearer_token
from idp.oidc.token_request import proof_request_refusal
from idp.services.claims import client_claims
from idp.services.dpop import DPOP_CHALLENGE, DPoPProofError
from idp.services.logout_return import app_link, seal_return
from idp.services.sessions import RpLogout, rp_logout
from idp.web import acts_on_get
from idp.web.answers import Answer
from idp.web.direct import DirectRoute
from idp.web.same_site import posted_again, posted_without_the_session
from idp.web.sessions import clear_session_cookie, current_session


# -- discovery ------------------------------------------------------------------------------------
@bp.get("/.well-known/openid-configuration")
def discovery() -> Response:
    """OpenID Provider metadata (OIDC Discovery 3)."""
    response = jsonify(provider_metadata(runtime().settings))
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/jwks")
def jwks() -> Response:
    """The public signing keys, current and still-valid retired ones (RFC 7517)."""
    response = jsonify(runtime().keys.public_jwks(db.session()))
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = f"public, max-age={runtime().settings.key_cache_ttl}"
    return response


# -- token side: Authlib ------------------------------------------------------------------------
# The token, introspection, revocation and userinfo requests a client sends are served below
# Flask's request machinery (idp.web.direct, which calls the ``*_answer`` functions with its own
# request object); their Flask routes are below ``DIRECT_ROUTES``.
def _committed(answer: Answer) -> Answer:
    # Commit whatever the flow wrote, errors included: a consumed code and the revocation a
    # replay triggers must persist even though the request itself fails. A request that opened
    # no Session (introspection's thin read, idp.thin_reads) has nothing to commit.
    if db.session.registry.has():
        db.session.commit()
    answer.set("Cache-Control", "no-store")
    answer.set("Pragma", "no-cache")
    return answer


#: A single-page app (a public client, ``--kind spa``) calls the token, revocation and userinfo
#: endpoints from its page's origin (OIDC Core 5.3: UserInfo "SHOULD support the use of Cross
#: Origin Resource Sharing"). Any origin: none of them reads a cookie, so a page gains nothing it
#: does not hold already (a code with its verifier, a token), and no credentials are allowed.
ANY_ORIGIN = ("Access-Control-Allow-Origin", "*")
#: A refusal's challenge (RFC 6750 3, RFC 6749 5.2) is for the page's script to read too.
CHALLENGE_READABLE = ("Access-Control-Expose-Headers", "WWW-Authenticate")
#: The preflight's answer (Fetch, "CORS protocol"): the methods and headers those calls use.
PREFLIGHT = (
    ANY_ORIGIN,
    CHALLENGE_READABLE,
    ("Access-Control-Allow-Methods", "GET, POST"),
    # RFC 9449 4.1: a page's DPoP proof travels in its own header.
    ("Access-Control-Allow-Headers", "Authorization, Content-Type, DPoP"),
    ("Access-Control-Max-Age", "600"),
)


#: A 429's ``Retry-After`` (idp.oidc.errors ``BudgetSpentError``, RFC 9110 10.2.3) is not a
#: CORS-safelisted response header: exposed, a page's script can wait as told. A public client,
#: a page's, is the one the address budgets refuse.
RETRY_READABLE = ("Access-Control-Expose-Headers", "Retry-After")


def cors(answer: Answer) -> Answer:
    # Headers nothing else sets, appended; the challenge exposed only where there is one.
    answer.headers.append(ANY_ORIGIN)
    if answer.status >= 400:
        if any(n == "WWW-Authenticate" for n, _ in answer.headers):
            answer.headers.append(CHALLENGE_READABLE)
        if answer.status == 429:
            answer.headers.append(RETRY_READABLE)
    return answer


def token_answer(current: Request) -> Answer:
    """Token endpoint (RFC 6749 3.2, OIDC Core 3.1.3); with a DPoP proof, RFC 9449 5."""
    return _proved(current, "/token", lambda: oauth_server().create_token_response(current))


def _proved(current: Request, path: str, respond: Callable[[], Answer]) -> Answer:
    """``respond``'s answer, committed and readable by any origin; with a DPoP proof, the proof
    checked first, spent once the client authenticated (idp.oidc.server
    ``IdpAuthorizationServer.authenticate_client``, before the grant runs), and what the request
    issues bound to its key: the tokens (RFC 9449 5 and 6, idp.oidc.token_issue) or a pushed
    request's code (10.1, idp.oidc.pushed), which read it from ``g`` as the ID token's client
    is."""
    if DPOP_HEADER not in current.environ:
        return cors(_committed(respond()))
    # A request malformed in itself (a parameter in the query or twice in the body, RFC 6749
    # 3.2, 5.2) or that authenticates its client more than one way (RFC 6749 2.3) is answered
    # for that, invalid_request, before its proof is checked: the proof may be right, and
    # invalid_dpop_proof (RFC 9449 5) would send the client to fix it; nor does a request
    # refused so spend its proof. Checked here only: the server does not check them again
    # (the request marked ``PARAMETERS_CHECKED``, its checked proof in ``g``; idp.oidc.server).
    refusal = proof_request_refusal(current)
    if refusal is not None:
        return cors(_committed(oauth_server().handle_error_response(None, refusal)))
    try:
        g.dpop_proof = checked_proof(current, path)
    except DPoPProofError as error:
        return cors(token_refusal(error))
    return cors(with_nonce(_committed(respond())))


def introspection_answer(current: Request) -> Answer:
    """Token introspection (RFC 7662)."""
    return _committed(oauth_server().create_endpoint_response("introspection", current))


def userinfo_answer(current: Request) -> Answer:
    """UserInfo endpoint (OIDC Core 5.3) with bearer tokens per RFC 6750 2.1 and 2.2, and DPoP
    tokens with their proofs per RFC 9449 7.1."""
    return cors(_userinfo(current))


def _userinfo(current: Request) -> Answer:
    scheme, _, value = current.environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "dpop":
        return with_nonce(_dpop_userinfo(current, value.strip()))
    token_value = value.strip() if scheme.lower() == "bearer" else ""
    if current.method == "POST" and current.mimetype == "application/x-www-form-urlencoded":
        sent = current.form.getlist("access_token")
        if len(sent) > 1 or (sent and "access_token" in _query_names(current)):
            # RFC 6749 3.2 (which RFC 6750 2.2 builds on): no parameter more than once; the
            # first value was read, so an answer could be about another token than the client
            # meant. Once in the body and once in the query is twice too.
            return _bearer_error(400, "invalid_request", "Send the access token once.")
        in_body = sent[0] if sent else ""
        if token_value and in_body:
            # RFC 6750 2 and 3.1: "Clients MUST NOT use more than one method to transmit the
            # token in each request": invalid_request.
            return _bearer_error(400, "invalid_request", "Send the access token one way only.")
        token_value = token_value or in_body
    if not token_value:
        return _bearer_error(401, None)
    access_token = bearer_token(token_value)
    # RFC 6750 3.1: revoked, expired, of a disabled user, or a client-credentials token (which
    # names no user): all the same invalid_token.
    if access_token is None or not access_token.active or access_token.holder is None:
        return _bearer_error(401, "invalid_token", "The access token is invalid or expired.")
    if access_token.jkt is not None:
        # RFC 9449 7.1: a DPoP-bound token presented as a bearer token is refused, with the
        # DPoP challenge: without the proof, whoever presents it may have stolen it.
        refusal = resource_refusal(401, "invalid_token", "The access token is bound to a DPoP key.")
        return with_nonce(refusal)
    if "openid" not in access_token.scope.split():
        return _bearer_error(403, "insufficient_scope", "The openid scope is required.")
    return _claims(access_token)


def _dpop_userinfo(current: Request, token_value: str) -> Answer:
    """RFC 9449 7.1: ``Authorization: DPoP <token>`` with a proof of the key the token is bound
    to, for this request, carrying the token's hash (``ath``). The token travels in the header
    only (RFC 9449 7.1 names no other way)."""
    if not token_value:
        return resource_refusal(401, "invalid_token", "The access token is missing.")
    try:
        proof = checked_proof(current, "/userinfo", access_token=token_value)
    except DPoPProofError as error:
        return resource_proof_refusal(error)
    access_token = bearer_token(token_value)
    if access_token is None or not access_token.active or access_token.holder is None:
        return resource_refusal(401, "invalid_token", "The access token is invalid or expired.")
    if access_token.jkt != proof.jkt:
        # RFC 9449 7.1 and 6.1: the proof's key must be the one the token is bound to; a bearer
        # token sent as a DPoP token is refused as well (it is bound to no key).
        return resource_refusal(401, "invalid_token", "The access token is not bound to this key.")
    # Spent (RFC 9449 11.1) only now, before the answer: a caller without a live token bound to
    # the proof's key records nothing; a public client's token, which anyone may get as that
    # client, spends the address's budget first (idp.oidc.dpop).
    client = token_client(access_token.client_id)
    try:
        spend_proof(proof, anonymous=client is None or client.is_public)
    except DPoPProofError as error:
        return resource_proof_refusal(error)
    except ProofBudgetSpentError as spent:
        # RFC 6749 5.2's JSON error as at the token endpoint, with its Retry-After.
        return Answer.of(*spent())
    if "openid" not in access_token.scope.split():
        # RFC 9449 7.1: a DPoP request's refusal carries the DPoP challenge (RFC 6750 3.1's
        # error code).
        return resource_refusal(403, "insufficient_scope", "The openid scope is required.")
    return _claims(access_token)


def _claims(access_token: Any) -> Answer:
    # The scoped session, not a Session: one opens only if the scope releases group claims.
    # OIDC Core 5.3.2: ``sub`` is the ID token's, the one the access token issued with it carries
    # (pairwise for a pairwise client, OIDC Core 8.1), even after a change of the client's
    # subject type or sector: computed again, the relying party would have to refuse the answer.
    claims = client_claims(
        db.session, access_token.holder, access_token.client_id, access_token.scope,
        subject=access_token.subject,
    )  # fmt: skip
    return Answer.json(200, claims, ("Cache-Control", "no-store"))


def _query_names(current: Request) -> Any:
    # The query parsed only when there is one (most requests have none).
    return current.args if current.environ.get("QUERY_STRING") else ()


def _bearer_error(status: int, error: str | None, description: str = "") -> Answer:
    # RFC 6750 3: the challenge names the error; with no token at all it carries no error code.
    # RFC 9449 7.2 (RFC 9110 11.6.1): UserInfo takes both schemes, so the DPoP challenge follows
    # the Bearer one, without the error, which belongs to the scheme the request used (7.2's
    # rules: none with no credentials, Figure 17; the Bearer challenge's otherwise, Figure 18).
    challenge = 'Bearer realm="idp"'
    body: dict[str, str] = {}
    if error:
        challenge += f', error="{error}", error_description="{description}"'
        body = {"error": error, "error_description": description}
    return Answer.json(status, body, ("WWW-Authenticate", f"{challenge}, {DPOP_CHALLENGE}"))


@bp.post("/device_authorization")
@csrf.exempt
def device_authorization() -> Response:
    """Device authorization endpoint (RFC 8628 3.1, 3.2)."""
    return _committed(oauth_server().create_endpoint_response("device_authorization")).response()


# OPTIONS is the CORS preflight's (``cors_preflight``), not Flask's automatic answer.
@bp.route("/par", methods=["POST"], provide_automatic_options=False)
@csrf.exempt
def pushed_authorization() -> Response:
    """Pushed authorization request endpoint (RFC 9126 2): 201 with the request_uri, or the JSON
    error of RFC 9126 2.3; no-store either way (RFC 9126 2.2). Readable by any origin, as the
    token endpoint's answers are: a single-page app (a public client) pushes from its page."""
    # RFC 9449 10.1: a proof at the PAR endpoint binds the pushed request's code to its key, as
    # ``dpop_jkt`` would.
    return _proved(
        request, "/par", lambda: oauth_server().create_endpoint_response("pushed_authorization")
    ).response()


def revocation_answer(current: Request) -> Answer:
    """Token revocation (RFC 7009)."""
    return cors(_committed(oauth_server().create_endpoint_response("revocation", current)))


#: The requests idp.web.direct serves, by path: their Flask endpoint (for the log line and the
#: metrics), the methods, the answer, and the CORS headers also on an answer idp.web.direct makes
#: for them (a request refused before the endpoint read it, a server failure).
DIRECT_ROUTES = {
    "/token": DirectRoute("oidc.token", frozenset({"POST"}), token_answer, cors),
    "/introspect": DirectRoute("oidc.introspect", frozenset({"POST"}), introspection_answer),
    "/revoke": DirectRoute("oidc.revoke", frozenset({"POST"}), revocation_answer, cors),
    "/userinfo": DirectRoute("oidc.userinfo", frozenset({"GET", "POST"}), userinfo_answer, cors),
}


def _through_flask(route: DirectRoute) -> Callable[[], Response]:
    def view() -> Response:
        return route.answer(request._get_current_object()).response()  # type: ignore[attr-defined]

    view.__name__ = route.endpoint.removeprefix("oidc.")
    return view


# The same paths in Flask's URL map, for what the direct endpoints do not take (HEAD, another
# method's 405), with the same answers; OAuth clients carry no CSRF token. OPTIONS is the CORS
# preflight's (``cors_preflight``), not Flask's automatic answer.
for _path, _route in DIRECT_ROUTES.items():
    bp.add_url_rule(_path, view_func=csrf.exempt(_through_flask(_route)),
                    methods=sorted(_route.methods), provide_automatic_options=False)  # fmt: skip


@bp.route("/token", methods=["OPTIONS"], provide_automatic_options=False)
@bp.route("/revoke", methods=["OPTIONS"], provide_automatic_options=False)
@bp.route("/userinfo", methods=["OPTIONS"], provide_automatic_options=False)
@bp.route("/par", methods=["OPTIONS"], provide_automatic_options=False)
@csrf.exempt
def cors_preflight() -> Response:
    """A page's preflight before it sends the Authorization header (CORS)."""
    return Answer(204, list(PREFLIGHT), b"").response()


# -- RP-initiated logout --------------------------------------------------------------------------
def _confirmation_fields(
    client: Any, redirect_uri: str | None, browser_session: Any
) -> dict[str, str]:
    """What the confirmation page posts back (RP-Initiated Logout 1.0 section 6). The
    ``id_token_hint`` stays out of it (an ID token of another user has no place in this user's
    page); when idp validated a way back with it (section 3: registered for the client the hint
    names), the page carries that client and a sealed proof of the validation instead
    (idp.services.logout_return), honoured only once the user confirms."""
    names = ("client_id", "post_logout_redirect_uri", "state", "logout_hint", "logout_return")
    fields = {name: request.values.get(name) for name in names}
    uri = fields["post_logout_redirect_uri"]
    if redirect_uri and client is not None and uri:
        fields["client_id"] = client.client_id
        session_hash = browser_session.id_hash if browser_session else ""
        fields["logout_return"] = seal_return(
            runtime().settings.secret_key, client.client_id, uri, session_hash
        )
    else:
        fields["logout_return"] = None
    return {name: value for name, value in fields.items() if value}


def _hint_as_user(browser_session: Any, client: Any, hinted: object) -> object:
    """The hint's ``sub`` as the browser's user id when it names them: the ``sub`` of the
    client's ID tokens, pairwise for a pairwise client (OIDC Core 8.1), now or before a change of
    its subjects (``SubjectIdentifiers.names``). Otherwise as it came. Without the client (a
    hint of none idp serves now: disabled or deleted) it names no one, public or pairwise, and
    the user is asked to confirm (RP-Initiated Logout 1.0 section 2: a hint whose relying party
    has no current session at the OP is suspect, and the OP MAY decline to act on it; section
    6). A public client's hint carried the user's id and ended the session unasked: an app the
    admin cut off, or whoever holds its ID tokens, still signed its users out of idp and of
    every other app."""
    if browser_session is None:
        return hinted
    if client is None:
        return None
    user_id = str(browser_session.user_id)
    return user_id if runtime().subjects.names(db.session, client, user_id, hinted) else hinted


def _hint_of_session(browser_session: Any, client: Any, claims: dict[str, Any]) -> bool:
    """Whether the hint's ``sid`` names this browser's session as the client knows it (its ID
    tokens' ``sid``, pairwise for a pairwise client, now or before a change of its subjects:
    ``SubjectIdentifiers.names_session``). RP-Initiated Logout 1.0 section 2: a hint whose
    ``sid`` is not the relying party's current session is suspect; without the client or a
    session there is nothing to compare (``_hint_as_user`` and ``rp_logout`` decide those)."""
    if browser_session is None or client is None:
        return True
    sid = str(browser_session.sid)
    return runtime().subjects.names_session(db.session, client, sid, claims.get("sid"))


@bp.route("/logout", methods=["GET", "POST"])
@csrf.exempt  # RP-Initiated Logout 2: RPs may POST here; our own confirmation form is checked below
@acts_on_get
def logout() -> Any:
    """OpenID Connect RP-Initiated Logout 1.0."""
    if posted_without_the_session(request):
        # Posted by the relying party's page: the browser withheld the session cookie
        # (SameSite=Lax), and the logout would end nothing; posted again from idp's page, it
        # comes along (idp.web.same_site).
        return posted_again(request)
    server = oauth_server()
    confirmed = request.method == "POST" and request.form.get("confirm") == "yes"
    try:
        end_request = server.validate_endpoint_request("end_session")
    except OAuth2Error as error:
        db.session.rollback()
        return render_template("oidc/error.html", message=error.description or error.error), 400
    browser_session = current_session()
    claims = end_request.id_token_claims
    decision = (
        RpLogout.CONFIRM
        if claims is None
        else rp_logout(
            None if browser_session is None else str(browser_session.user_id),
            _hint_as_user(browser_session, end_request.client, claims.get("sub")),
            of_this_session=_hint_of_session(browser_session, end_request.client, claims),
        )
    )
    if decision is RpLogout.CONFIRM:
        if not confirmed:
            # RP-Initiated Logout 6: without a valid id_token_hint (or with one for another
            # user than the one signed in here, or of another session), ask the user first.
            # Section 2: the OP "SHOULD ask the End-User whether to log out": the page names who
            # is signed in and lets them stay so, not only sign out.
            return render_template("oidc/logout_confirm.html", fields=_confirmation_fields(
                end_request.client, end_request.redirect_uri, browser_session),
                signed_in=browser_session.user.email if browser_session else None)  # fmt: skip
        csrf.protect()  # the confirmation must come from our own page
    # Only ever this browser's own session (RP-Initiated Logout 2); without one, nothing ends.
    g.idp_logout_session = browser_session if decision is not RpLogout.NOTHING else None
    answer = server.create_endpoint_response("end_session", end_request)
    db.session.commit()
    if answer is not None:
        response = answer.response()
    else:
        # No redirect back (none asked for, or not a registered one): no dead end either. The
        # app's own registered post-logout address (RP-Initiated Logout 3), checked on the
        # stored registration (idp.services.logout_return.app_link); sign-in again always.
        named = end_request.client
        client = query_client(named.client_id) if named is not None else None
        home = app_link(client)
        response = Response(render_template("oidc/logged_out.html", client=client, app_home=home))
    clear_session_cookie(response)
    return response
