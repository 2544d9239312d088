"""The device authorization grant (RFC 8628): the endpoint a device asks for its codes (3.1, 3.2)
and the grant it polls the token endpoint with (3.4, 3.5), registered by
idp.oidc.server.create_authorization_server."""

from __future__ import annotations

from typing import Any

from authlib.oauth2 import OAuth2Error, rfc8628
from authlib.oauth2.rfc6749 import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.hooks import hooked

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import DeviceAuthorization
from idp.oidc.checks import check_scope
from idp.oidc.client_auth import CLIENT_AUTH_METHODS
from idp.oidc.code_refusals import remember_spend, take_back
from idp.oidc.errors import AuthorizationError, BudgetSpentError
from idp.oidc.group_gate import still_allowed
from idp.services import audit
from idp.services.anonymous import PENDING_AUTHORIZATIONS_WINDOW
from idp.services.device import DEVICE_POLL_REFUSED, PollOutcome


class DeviceCodeGrant(rfc8628.DeviceCodeGrant):
    """The token side of RFC 8628 (3.4, 3.5): the device polls with its device code. Authlib's
    grant decides in its own order and spends nothing; every decision here is
    ``idp.services.device``'s, and the tokens are issued as the code flow issues them: the same
    ``generate_token``/``save_token``, and the same ID token extension, with the approved
    authorization in the authorization code's place (its grant gives ``sid``, ``auth_time``,
    ``acr`` and ``amr``)."""

    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def _validate_poll(self) -> None:
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("Missing 'device_code'.")
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            # RFC 6749 5.2: the client authenticated but may not use this grant type.
            raise UnauthorizedClientError("The client may not use the device authorization grant.")
        poll = services().device_flow.poll(device_code, client.client_id, clock().now())
        if poll.outcome is PollOutcome.PENDING:
            raise rfc8628.AuthorizationPendingError()
        if poll.outcome is PollOutcome.SLOW_DOWN:
            raise rfc8628.SlowDownError()
        if poll.outcome is PollOutcome.DENIED:
            raise AccessDeniedError("The user denied the request.")
        if poll.outcome is PollOutcome.EXPIRED:
            raise rfc8628.ExpiredTokenError()
        authorization = poll.authorization
        if authorization is None or authorization.grant is None:
            raise InvalidGrantError("The device code is invalid, expired or already used.")
        # Spent: a refusal from now on takes its grant back (idp.oidc.code_refusals).
        remember_spend(self.request, authorization.grant.id, DEVICE_POLL_REFUSED)
        # The device authorization's client is the stored registration (read with it), not the
        # cached copy: idp.oidc.group_gate.
        restricted = authorization.client.restricted_to_groups
        if not still_allowed(authorization.grant, client, restricted_as_stored=restricted):
            raise InvalidGrantError("The user may no longer use this application.")
        self.request.client = client
        self.request.user = authorization.grant.user
        self.request.authorization_code = authorization

    def validate_token_request(self) -> None:
        try:
            self._validate_poll()
        except OAuth2Error:
            take_back(self.request)  # after the device code's spend only
            raise

    @hooked
    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        try:
            return self._tokens()
        except OAuth2Error:
            take_back(self.request)
            raise

    def _tokens(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        authorization: DeviceAuthorization = self.request.authorization_code
        client = self.request.client
        token = self.generate_token(
            user=self.request.user,
            # RFC 6749 3.3, as a code's exchange narrows (AuthorizationCodeGrant): the poll is
            # where the tokens are issued, so a scope an admin took from the client after the
            # user approved is not granted (the token response, the ID token's claims, which
            # follow the token's scope, and the refresh token's scope).
            scope=client.get_allowed_scope(authorization.scope),
            include_refresh_token=client.check_grant_type("refresh_token"),
        )
        self.save_token(token)
        audit.record(
            db.session(), "device.tokens_issued", subject_id=self.request.user.id,
            client_id=self.request.client.client_id, context=services().context,
        )  # fmt: skip
        return 200, token, self.TOKEN_RESPONSE_HEADER


class DeviceAuthorizationEndpoint(rfc8628.DeviceAuthorizationEndpoint):
    """RFC 8628 3.1 / 3.2: a device asks for a device code and a user code."""

    # RFC 8628 3.1: the client authenticates as at the token endpoint (public clients send
    # their client_id), with every method the token endpoint accepts.
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def create_endpoint_response(self, request: OAuth2Request) -> Any:
        client = self.authenticate_client(request)
        if not client.check_grant_type(rfc8628.DEVICE_CODE_GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use the device authorization grant.")
        try:
            # RFC 6749 3.3 as at the authorization endpoint: scopes outside the registration are
            # dropped, and offline_access needs the refresh_token grant (OIDC Core 11).
            scope = check_scope({"scope": request.payload.scope or ""}, client)
        except AuthorizationError as error:
            raise InvalidScopeError(error.description) from None
        rt = runtime()
        now = clock().now()
        if not services().storage_budgets.pending_authorization(services().context.ip_address, now):
            # docs/operations.md, "Storage budgets": an anonymous public client could otherwise
            # fill the table. The device retries when the window ends (429 with Retry-After, and
            # RFC 6749 4.1.2.1's error code).
            db.session.commit()  # the counted request
            raise DeviceBudgetSpentError(
                "pending_authorization", PENDING_AUTHORIZATIONS_WINDOW, now
            )
        issued = services().device_flow.start(
            client, scope, ttl=rt.settings.device_code_ttl,
            interval=rt.settings.device_poll_interval, context=services().context, now=now,
        )  # fmt: skip
        verification_uri = rt.settings.endpoint("/device")
        data = {
            "device_code": issued.device_code,
            "user_code": issued.user_code,
            "verification_uri": verification_uri,
            # RFC 8628 3.3.1: for a QR code or a link; the page still asks the user to confirm
            # the code (RFC 8628 5.4).
            "verification_uri_complete": f"{verification_uri}?user_code={issued.user_code}",
            "expires_in": issued.expires_in,
            "interval": issued.interval,
        }
        return 200, data, [("Content-Type", "application/json"), ("Cache-Control", "no-store")]


class DeviceBudgetSpentError(BudgetSpentError):
    description = "Too many device sign-in requests from this network. Try again in a few minutes."
