"""Pushed authorization requests (RFC 9126): the endpoint a client pushes its authorization
request to (``POST /par``, RFC 9126 2), registered with Authlib's server as the device
authorization endpoint is, and the request_uri the browser then brings to ``/authorize``
(RFC 9126 4). Also the context the authorization endpoint's checks run in, which both share:
a pushed request is validated exactly as ``/authorize`` validates one (idp.oidc.checks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidRequestError, OAuth2Request
from flask import g

from idp import checkpoints
from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.oidc.checks import (
    AuthorizationRequest,
    CheckContext,
    check_client,
    check_parameters_single_valued,
    check_stored_request,
    page_error,
    parse_authorization_request,
)
from idp.oidc.client_auth import CLIENT_AUTH_METHODS, RealmedInvalidClientError, presented_secret
from idp.oidc.clients import query_client
from idp.oidc.errors import AuthorizationError, BudgetSpentError, error_description
from idp.services.anonymous import CLIENT_PUSHES_WINDOW, PENDING_AUTHORIZATIONS_WINDOW
from idp.services.pending_authorizations import REQUEST_URI_PREFIX, push_lifetime
from idp.services.tokens import ID_TOKEN_TYP, verify_issued_jwt

#: Where ``/authorize`` is held, in tests, after it spent a request_uri and before its commit
#: (idp.checkpoints): a second request with the same request_uri must find it spent.
SPEND_CHECKPOINT = "authorize.pushed_spent"
#: The body parameters that authenticate the client at the PAR endpoint (RFC 9126 2.1: "relied
#: upon only for client authentication and are not germane to the authorization request").
_CLIENT_CREDENTIALS = ("client_secret", "client_assertion", "client_assertion_type")


def check_context(*, pushed: bool = False) -> CheckContext:
    """What the authorization request's checks need: the client's registration, the ID token
    hint's verification, the deployment's PKCE and PAR policies. ``pushed``: the request came
    through ``POST /par`` (RFC 9126 2)."""
    rt = runtime()

    def verify_hint(token: str) -> dict[str, Any] | None:
        # OIDC Core 3.1.2.1: the hint is an ID token idp issued; access tokens (``at+jwt``) and
        # logout tokens (``logout+jwt``) are signed with the same keys, and ``typ`` tells them
        # apart (RFC 8725 3.11), as at the logout endpoint (idp.oidc.endpoints.EndSession). As
        # there too, a hint signed by a key since unpublished still names its user while the
        # session it was issued in may live (the sessions' absolute lifetime).
        lifetime = timedelta(seconds=services().policy.session_absolute_ttl)
        return verify_issued_jwt(
            db.session(), rt.keys, token, issuer=rt.settings.issuer, typ=ID_TOKEN_TYP,
            unpublished_within=lifetime,
        )  # fmt: skip

    return CheckContext(
        find_client=query_client,
        verify_id_token_hint=verify_hint,
        pkce_required_for_all=rt.settings.pkce_required_for == "all",
        par_required_for_all=rt.settings.require_pushed_authorization_requests,
        pushed=pushed,
    )


# -- the PAR endpoint -----------------------------------------------------------------------------
class PushRefusedError(OAuth2Error):
    """RFC 9126 2.3: the pushed request failed a check of the authorization endpoint; the error
    code is the one ``/authorize`` would have sent (RFC 6749 4.1.2.1), in a JSON answer."""

    status_code = 400


class PushBudgetSpentError(BudgetSpentError):
    """docs/operations.md, "Storage budgets": this address pushed its share as a public client,
    or a confidential client its own (``par_requests_per_client``). RFC 9126 2.3 allows 429 for
    a request over a rate limit."""

    description = "Too many pushed requests from this network. Try again in a few minutes."


#: The refusal of a push authenticated by a rotation's old secret in its last second.
SECRET_ENDING = "The client's previous secret ends within a second. Push with the current secret."

#: docs/configuration.md, ``par_requests_per_client``.
CLIENT_PUSHES_SPENT = "Too many pushed requests from this client. Try again in a minute."


class PushedAuthorizationEndpoint:
    """RFC 9126 2: ``POST /par``. The client authenticates as at the token endpoint, with the
    same methods and the same refusals (RFC 9126 2: "The rules for client authentication as
    defined in [RFC6749] for token endpoint requests ... apply"; Authlib's server, through
    ``IdpAuthorizationServer.authenticate_client``); the request is then checked exactly as
    ``/authorize`` checks one and kept for ``par_request_ttl`` seconds."""

    ENDPOINT_NAME = "pushed_authorization"

    def __init__(self, server: Any) -> None:
        self.server = server

    def __call__(self, request: OAuth2Request) -> Any:
        return self.create_endpoint_response(request)

    def create_endpoint_request(self, request: Any) -> OAuth2Request:
        return self.server.create_oauth2_request(request)

    def create_endpoint_response(self, request: OAuth2Request) -> Any:
        # RFC 9126 2.1: the parameters, client authentication's included, are in the body;
        # a push with any in the query was refused before it came here, as at the token
        # endpoint (idp.oidc.token_request ``parameters_refusal``).
        client = self.server.authenticate_client(request, CLIENT_AUTH_METHODS, self.ENDPOINT_NAME)
        now = clock().now()
        settings = runtime().settings
        # A push the old secret of a rotation authenticated, in its overlap, ends with it; in
        # the overlap's last second it would end at once (RFC 9126 2.2: a positive
        # ``expires_in``), and the secret is refused as ended, before anything is counted or
        # stored. RFC 6749 5.2: invalid_client, 401 with the Basic challenge as for any failed
        # authentication at this endpoint (idp.oidc.client_auth).
        secret_ends = client.previous_secret_ends_for(presented_secret(request))
        ttl = push_lifetime(settings.par_request_ttl, now, secret_ends)
        if ttl is None:
            raise RealmedInvalidClientError(status_code=401, description=SECRET_ENDING)
        if not client.is_public and not services().storage_budgets.client_pushed_request(
            client.client_id, runtime().settings.par_requests_per_client, now
        ):
            # Counted before the checks: a refused push is audited one row each too. RFC 9126
            # 2.3 allows 429 for a request over a rate limit. Audited once per client and
            # window, committed with the answer (idp.oidc.token_views ``_committed``).
            services().pending_authorizations.push_over_budget(
                client.client_id, services().context, now, services().storage_budgets
            )
            raise PushBudgetSpentError(
                "client_pushed_request", CLIENT_PUSHES_WINDOW, now, CLIENT_PUSHES_SPENT
            )
        try:
            auth_request = _checked_push(request, client)
        except OAuth2Error as refused:
            # Audited (idp.services.pending_authorizations ``push_refused``), and committed with
            # the answer (idp.oidc.token_views ``_committed``).
            services().pending_authorizations.push_refused(
                client, refused.error or "invalid_request", refused.description or "",
                services().context, now, services().storage_budgets,
            )  # fmt: skip
            raise
        if client.is_public and not services().storage_budgets.pushed_request(
            services().context.ip_address, now
        ):
            # A public client's client_id authenticates nobody: its pushes are anonymous writes,
            # bounded per address as /authorize's pending requests are.
            db.session.commit()  # the counted request
            raise PushBudgetSpentError("pushed_request", PENDING_AUTHORIZATIONS_WINDOW, now)
        # Under the client's secret generation as it authenticated: a rotation that stops the
        # secret while this push is on its way takes back what was stored before it, and
        # /authorize refuses this one (RFC 9126 2; pending_authorizations ``spend_pushed``).
        request_uri = services().pending_authorizations.push(
            client.client_id, auth_request.to_params(), now, ttl, services().context,
            secret_generation=client.secret_generation,
        )  # fmt: skip
        data = {"request_uri": request_uri, "expires_in": ttl}  # RFC 9126 2.2
        return 201, data, [("Content-Type", "application/json")]


def _checked_push(request: OAuth2Request, client: Any) -> AuthorizationRequest:
    """The pushed request of ``client``, which authenticated, checked as ``/authorize`` checks
    one (RFC 9126 2.1); an ``OAuth2Error`` of RFC 9126 2.3 when it is refused."""
    # The body only (RFC 9126 2.1: parameters "in the HTTP request message body"), without
    # what authenticated the client.
    params = request.form.to_dict(flat=False)
    for name in _CLIENT_CREDENTIALS:
        params.pop(name, None)
    if any(value != "" for value in params.get("request_uri", ())):
        # RFC 9126 2.1: "The request_uri authorization request parameter is one exception,
        # and it MUST NOT be provided."
        raise InvalidRequestError("The request_uri parameter must not be pushed.")
    # RFC 9126 2.1: client_id is required; one authenticated by its Basic header alone
    # names itself (a different client_id was refused as naming two clients already), also
    # when the body sends client_id without a value, which is as if omitted (RFC 6749 3.1).
    if not any(params.get("client_id", ())):
        params["client_id"] = [client.client_id]
    try:
        auth_request = parse_authorization_request(params, check_context(pushed=True))
    except AuthorizationError as error:
        raise PushRefusedError(
            error=error.error, description=error_description(error.description)
        ) from None
    if auth_request.client_id != client.client_id:
        raise InvalidRequestError("The client_id is not the client that authenticated.")
    proved: str | None = g.get("dpop_jkt")
    if proved is not None:
        # RFC 9449 10.1: the push's DPoP proof binds the code to its key; a dpop_jkt naming
        # another key contradicts it and the request is refused.
        if auth_request.dpop_jkt not in (None, proved):
            raise InvalidRequestError("The dpop_jkt is not the DPoP proof's key.")
        auth_request = replace(auth_request, dpop_jkt=proved)
    return auth_request


# -- the request_uri at /authorize ----------------------------------------------------------------
def names_pushed_request(params: Mapping[str, Sequence[str]]) -> bool:
    """Whether an authorization request carries a request_uri of the PAR endpoint's form (RFC
    9126 2.2). Any other request_uri is a request object by reference (OIDC Core 6.2), which
    idp does not support: the checks answer it with request_uri_not_supported, as before."""
    return any(value.startswith(REQUEST_URI_PREFIX) for value in params.get("request_uri", ()))


def pushed_request(params: Mapping[str, Sequence[str]], now: datetime) -> AuthorizationRequest:
    """The request pushed under ``params``' request_uri, spent once and committed (RFC 9126 4:
    one-time use; an expired one "MUST be rejected"), checked against the client's registration
    as it stands now (RFC 9126 4: validated "as it would any other authorization request"). Only
    the pushed parameters count: every other parameter of this request but client_id is
    ignored, never merged (RFC 9126 4, RFC 9101 6.3). Raises ``AuthorizationError``: an error
    page while the redirect URI is unknown (the request_uri spent nothing)."""
    if len([value for value in params.get("request_uri", ()) if value != ""]) > 1:
        raise page_error("The 'request_uri' parameter must appear once.")
    values = check_parameters_single_valued(params)
    client = check_client(values, check_context())
    pushed = services().pending_authorizations.spend_pushed(
        values["request_uri"], client.client_id, now, client.secret_generation
    )
    checkpoints.reached(SPEND_CHECKPOINT)
    if pushed is None:
        db.session.rollback()
        raise AuthorizationError(
            "invalid_request_uri",
            "This sign-in request has expired or was already used. Go back to the application "
            "and start again.",
            redirectable=False,
        )
    # Committed at once: whatever this request answers, the request_uri was used.
    db.session.commit()
    return check_stored_request(AuthorizationRequest.from_params(pushed), client, check_context())
