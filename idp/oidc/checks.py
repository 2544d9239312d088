"""The authorization endpoint's spec checks, one small function each, in the order they run.

Each check names the clause it implements. ``parse_authorization_request`` composes them; the view
only turns the result or the ``AuthorizationError`` into a response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from idp.models import Client
from idp.oidc.errors import AuthorizationError, page_error
from idp.services.assurance import ACR_LEVELS
from idp.services.tokens import MAX_TOKEN_LENGTH

#: RFC 7636 4.1 and 4.2: code_verifier and code_challenge are 43-128 characters of the
#: unreserved set (matched whole: "$" would also match before a final line break).
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
#: OIDC Core 3.1.2.1: max_age is a non-negative number of seconds; ten digits are 300 years.
MAX_AGE = re.compile(r"[0-9]{1,10}")
PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account"})
RESPONSE_MODES = ("query", "form_post")
# Parameters RFC 6749 3.1 says "MUST NOT be included more than once", plus the OIDC ones.
SINGLE_VALUED = (
    "client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method", "prompt", "max_age", "login_hint",
    "id_token_hint", "acr_values", "request", "request_uri", "dpop_jkt",
)  # fmt: skip
#: RFC 9449 10: ``dpop_jkt`` is an RFC 7638 SHA-256 thumbprint, 43 base64url characters.
DPOP_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_PARAMETER_LENGTH = 4096
#: Parameters allowed longer: an ID token idp issued is a valid id_token_hint (OIDC Core 3.1.2.1)
#: however long its ``groups`` claim makes it, up to what ``verify_issued_jwt`` reads (a longer
#: one is refused there, as invalid_request sent to the client).
LONGER_PARAMETERS = {"id_token_hint": MAX_TOKEN_LENGTH}
#: The width of ``AuthorizationCode.nonce``.
MAX_NONCE_LENGTH = 512
#: The width of ``AuthorizationCode.redirect_uri``, the longest URI a client may register: a
#: native app's loopback URI with a port added (RFC 8252 7.3) can be longer than it registered.
MAX_REDIRECT_URI_LENGTH = 2000
#: ``state`` is kept with a pending request (docs/operations.md, "Storage budgets"); RFC 6749 sets
#: no length, clients use tens of characters, a signed state object well under this.
MAX_STATE_LENGTH = 2048
#: The longest email address (RFC 5321 4.5.3.1: 64-octet local part, @, 255-octet domain): a
#: longer login_hint cannot name an account and is dropped, as any hint may be (OIDC Core 3.1.2.1).
MAX_LOGIN_HINT_LENGTH = 320


@dataclass(frozen=True)
class AuthorizationRequest:
    """A validated authorization request: everything later steps may rely on."""

    client_id: str
    redirect_uri: str
    response_mode: str
    state: str | None
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    prompt: tuple[str, ...]
    max_age: int | None
    login_hint: str | None
    id_token_hint_sub: str | None
    acr_values: str | None
    #: It was pushed (``POST /par``, RFC 9126 2: ``CheckContext.pushed``): kept with the request
    #: while it waits, so that a client that comes to require PAR meanwhile gets no code for one
    #: that was not (``check_stored_request``). None in a request stored before idp kept it,
    #: which is answered as it was then.
    pushed: bool | None = None
    #: RFC 9449 10: the DPoP key the code is bound to (None in a request stored before it).
    dpop_jkt: str | None = None

    def to_params(self) -> dict[str, Any]:
        # Every field is a string, a number, a flag, None or a tuple of strings: the values need
        # no copy, which ``dataclasses.asdict`` makes of each, at about 200 Python calls a
        # request (docs/performance-rounds.md, "The twenty-sixth round").
        return {name: getattr(self, name) for name in _PARAMETER_NAMES}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AuthorizationRequest:
        values = dict(params)
        values["prompt"] = tuple(values.get("prompt") or ())
        return cls(**values)


#: The fields ``AuthorizationRequest.to_params`` stores and ``from_params`` reads back.
_PARAMETER_NAMES = tuple(field.name for field in fields(AuthorizationRequest))


@dataclass(frozen=True)
class CheckContext:
    """What the checks need besides the request itself."""

    find_client: Callable[[str], Client | None]
    #: Verifies an ID token we issued (signature and issuer, not expiry) and returns its claims.
    verify_id_token_hint: Callable[[str], dict[str, Any] | None]
    pkce_required_for_all: bool
    #: RFC 9126 5: the deployment accepts authorization requests only through ``POST /par``.
    par_required_for_all: bool = False
    #: The request is being pushed (RFC 9126 2): the one way in for a client that must push.
    pushed: bool = False


def parse_authorization_request(
    params: Mapping[str, Sequence[str]], context: CheckContext
) -> AuthorizationRequest:
    """Run every check; raise ``AuthorizationError`` at the first failure."""
    values = check_parameters_single_valued(params)
    client = check_client(values, context)
    redirect_uri = check_redirect_uri(values, client)
    # From here on, errors can be sent to redirect_uri: it is registered for this client.
    try:
        return _parse_after_redirect_uri(values, client, redirect_uri, context)
    except AuthorizationError as error:
        error.redirect_uri = redirect_uri
        error.state = values.get("state")
        if values.get("response_mode") in RESPONSE_MODES:
            error.response_mode = values["response_mode"]
        raise


def _parse_after_redirect_uri(
    values: dict[str, str], client: Client, redirect_uri: str, context: CheckContext
) -> AuthorizationRequest:
    response_mode = check_response_mode(values)
    check_pushed_required(
        client, required_for_all=context.par_required_for_all, pushed=context.pushed
    )
    check_no_request_object(values)
    check_response_type(values, client)
    scope = check_scope(values, client)
    code_challenge, method = check_pkce(values, client, context)
    prompt = check_prompt(values)
    max_age = check_max_age(values)
    check_nonce(values)
    check_state(values)
    return AuthorizationRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        response_mode=response_mode,
        state=values.get("state"),
        scope=scope,
        nonce=values.get("nonce"),
        code_challenge=code_challenge,
        code_challenge_method=method,
        prompt=prompt,
        max_age=max_age,
        login_hint=kept_login_hint(values),
        id_token_hint_sub=check_id_token_hint(values, client, context),
        acr_values=kept_acr_values(values),
        pushed=context.pushed,
        dpop_jkt=check_dpop_jkt(values),
    )


def check_dpop_jkt(values: dict[str, str]) -> str | None:
    """RFC 9449 10: the thumbprint of the key whose proof must come with the code's exchange;
    malformed, it could match no key, and the client would learn only at the token endpoint."""
    jkt = values.get("dpop_jkt")
    if jkt is None:
        return None
    if not DPOP_JKT.fullmatch(jkt):
        raise AuthorizationError("invalid_request", "dpop_jkt must be a SHA-256 JWK thumbprint.")
    return jkt


def check_stored_request(
    request: AuthorizationRequest, client: Client, context: CheckContext
) -> AuthorizationRequest:
    """A stored request (waiting for sign-in or consent) answered under ``client``'s registration
    as it stands now, not as it stood when the request arrived: a redirect URI removed meanwhile
    gets the error page (RFC 6749 3.1.2.3, OIDC Core 3.1.2.6), the authorization code grant taken
    from the client is ``unauthorized_client`` (RFC 6749 4.1.2.1, as ``check_code_grant`` answers
    a new request), and the scopes shrink to those still allowed (RFC 6749 3.3; none left is
    ``invalid_scope``); both errors are sent to the client. A client disabled meanwhile gets the
    error page, as at ``check_client``: its consent page is no place to share data with it. A
    request that was not pushed gets ``invalid_request`` once its client, or the deployment
    (``context``: another node's settings, or this one's restarted), requires PAR (RFC 9126
    7.4: the policy at use, not at arrival; RFC 9126 5 and 6)."""
    if client.disabled_at is not None:
        raise page_error("The application that sent you here is not registered.")
    check_redirect_uri({"redirect_uri": request.redirect_uri}, client)
    try:
        check_pushed_required(
            client, required_for_all=context.par_required_for_all,
            pushed=request.pushed is not False,
        )  # fmt: skip
        check_code_grant(client)
        scope = check_scope({"scope": request.scope}, client)
    except AuthorizationError as error:
        error.redirect_uri = request.redirect_uri
        error.state = request.state
        error.response_mode = request.response_mode
        raise
    return replace(request, scope=scope)


def check_parameters_single_valued(params: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """RFC 6749 3.1: request parameters MUST NOT be included more than once, and one sent
    without a value is treated as omitted (an empty ``request`` is no request object, an empty
    ``state`` is not echoed). Unknown parameters are ignored (RFC 6749 3.1, OIDC Core 3.1.2.1)."""
    values: dict[str, str] = {}
    repeated = []
    for name in SINGLE_VALUED:
        given = [value for value in params.get(name, ()) if value != ""]
        if len(given) > 1:
            repeated.append(name)
        if given:
            if len(given[0]) > LONGER_PARAMETERS.get(name, MAX_PARAMETER_LENGTH):
                raise page_error(f"The '{name}' parameter is too long.")
            values[name] = given[0]
    if "client_id" in repeated or "redirect_uri" in repeated:
        raise page_error("The client_id and redirect_uri parameters must appear once.")
    if repeated:
        values["_repeated"] = repeated[0]
    return values


def check_client(values: Mapping[str, str], context: CheckContext) -> Client:
    """RFC 6749 4.1.2.1: an unknown client gets an error page, never a redirect."""
    client_id = values.get("client_id")
    if not client_id:
        raise page_error("The request has no client_id.")
    client = context.find_client(client_id)
    if client is None or client.disabled_at is not None:
        raise page_error("The application that sent you here is not registered.")
    return client


def check_redirect_uri(values: Mapping[str, str], client: Client) -> str:
    """OIDC Core 3.1.2.1: redirect_uri is required and must exactly match a registered one
    (simple string comparison, RFC 9700 2.1); otherwise an error page, never a redirect."""
    redirect_uri = values.get("redirect_uri")
    if not redirect_uri:
        raise page_error("The request has no redirect_uri.")
    if len(redirect_uri) > MAX_REDIRECT_URI_LENGTH:
        # Only a loopback port variant can be longer than a registered URI: the code could not
        # keep it (PostgreSQL refused the code's row, a 500), so it is refused here, unverified.
        raise page_error(f"The redirect_uri is longer than {MAX_REDIRECT_URI_LENGTH} characters.")
    if not client.check_redirect_uri(redirect_uri):
        # Named, so that whoever integrates the client sees what to register; JSON-quoted, so
        # that no control character or quote in it reaches the page or the log line as such
        # (the page escapes HTML besides).
        raise page_error(
            f"The redirect_uri {json.dumps(redirect_uri[:500])} is not registered for the "
            f"application {client.name} (client_id {client.client_id}). An administrator can add "
            "it, exactly as sent, on the application's page in the admin console."
        )
    return redirect_uri


def check_response_mode(values: Mapping[str, str]) -> str:
    """OAuth 2.0 Multiple Response Types 2.1 and Form Post Response Mode 2."""
    mode = values.get("response_mode") or "query"
    if mode not in RESPONSE_MODES:
        # The error itself must still reach the client: fall back to query.
        raise AuthorizationError("invalid_request", f"Unsupported response_mode '{mode}'.")
    if "_repeated" in values:
        raise AuthorizationError(
            "invalid_request", f"The '{values['_repeated']}' parameter must appear once."
        )
    return mode


def check_pushed_required(client: Client, *, required_for_all: bool, pushed: bool) -> None:
    """RFC 9126 4: where policy makes PAR "the only means for a client to pass authorization
    request data" (RFC 9126 5 for the deployment, ``required_for_all``; 6 for the client), a
    request that was not ``pushed`` is refused with ``invalid_request``. Sent to the client: the
    client and its redirect URI are verified already (RFC 6749 4.1.2.1), and the client learns
    why it got no code."""
    required = required_for_all or client.require_pushed_authorization_requests
    if required and not pushed:
        raise AuthorizationError(
            "invalid_request",
            "This application must push its authorization requests (RFC 9126: POST /par, then "
            "/authorize with client_id and request_uri).",
        )


def check_no_request_object(values: Mapping[str, str]) -> None:
    """OIDC Core 6: request objects are not supported (and not advertised)."""
    if "request" in values:
        raise AuthorizationError("request_not_supported", "Request objects are not supported.")
    if "request_uri" in values:
        raise AuthorizationError(
            "request_uri_not_supported", "The request_uri parameter is not supported."
        )


def check_response_type(values: Mapping[str, str], client: Client) -> None:
    """RFC 6749 4.1.1 / RFC 9700 2.1.2: only the authorization code flow is offered."""
    response_type = values.get("response_type")
    if not response_type:
        raise AuthorizationError("invalid_request", "The request has no response_type.")
    if response_type != "code" or not client.check_response_type(response_type):
        raise AuthorizationError(
            "unsupported_response_type", "Only response_type=code is supported."
        )
    check_code_grant(client)


def check_code_grant(client: Client) -> None:
    """RFC 6749 4.1.2.1 ``unauthorized_client`` for a client not registered for the
    authorization code grant."""
    if not client.check_grant_type("authorization_code"):
        # RFC 6749 4.1.2.1: "The client is not authorized to request an authorization code
        # using this method" (an app of the device flow alone, say): answered before the user
        # signs in and consents for a code the token endpoint would refuse.
        raise AuthorizationError(
            "unauthorized_client", "The client may not use the authorization code grant."
        )


def check_scope(values: Mapping[str, str], client: Client) -> str:
    """RFC 6749 3.3: scopes outside the client's registration are dropped; nothing left is an
    error. OIDC Core 11: offline_access only for clients allowed to hold refresh tokens."""
    allowed = client.get_allowed_scope(values.get("scope", ""))
    if not allowed:
        raise AuthorizationError("invalid_scope", "No requested scope is allowed for this client.")
    return allowed


def check_pkce(
    values: Mapping[str, str], client: Client, context: CheckContext
) -> tuple[str | None, str | None]:
    """RFC 7636 4.3 and RFC 9700 2.1.1: S256 only (``plain`` and an absent method, which means
    plain, are refused); required for public clients and, by default, for every client."""
    challenge = values.get("code_challenge")
    method = values.get("code_challenge_method")
    if not challenge:
        if method:
            raise AuthorizationError("invalid_request", "code_challenge_method without challenge.")
        if client.is_public or context.pkce_required_for_all:
            raise AuthorizationError("invalid_request", "PKCE with S256 is required.")
        return None, None
    if method != "S256":
        raise AuthorizationError(
            "invalid_request", "code_challenge_method must be S256 (plain is not allowed)."
        )
    if not CODE_CHALLENGE.fullmatch(challenge):
        raise AuthorizationError("invalid_request", "The code_challenge is malformed.")
    return challenge, method


def check_prompt(values: Mapping[str, str]) -> tuple[str, ...]:
    """OIDC Core 3.1.2.1: known values only; ``none`` must stand alone."""
    prompt = tuple(dict.fromkeys(values.get("prompt", "").split()))
    unknown = [p for p in prompt if p not in PROMPT_VALUES]
    if unknown:
        raise AuthorizationError("invalid_request", f"Unsupported prompt value '{unknown[0]}'.")
    if "none" in prompt and len(prompt) > 1:
        raise AuthorizationError("invalid_request", "prompt=none cannot be combined.")
    return prompt


def check_max_age(values: Mapping[str, str]) -> int | None:
    """OIDC Core 3.1.2.1: max_age is a non-negative number of seconds."""
    raw = values.get("max_age")
    if raw is None or raw == "":
        return None
    # ASCII digits only: str.isdigit also takes superscripts (which int() refuses: a 500) and
    # other scripts' digits, none of which is the decimal number OIDC Core 3.1.2.1 asks for.
    if not MAX_AGE.fullmatch(raw):
        raise AuthorizationError("invalid_request", "max_age must be a non-negative integer.")
    return int(raw)


def check_nonce(values: Mapping[str, str]) -> None:
    """OIDC Core 3.1.2.1 sets no length for nonce, but it is kept with the authorization code
    (``AuthorizationCode.nonce``): a longer one is refused here, not at the database."""
    if len(values.get("nonce") or "") > MAX_NONCE_LENGTH:
        raise AuthorizationError(
            "invalid_request", f"The nonce is longer than {MAX_NONCE_LENGTH} characters."
        )


def check_state(values: Mapping[str, str]) -> None:
    """RFC 6749 4.1.1 sets no length for state, but it waits in the database with the pending
    request: a longer one is refused with the spec's error (RFC 6749 4.1.2.1 invalid_request),
    redirected to the client with its state, as every error after the redirect URI check."""
    if len(values.get("state") or "") > MAX_STATE_LENGTH:
        raise AuthorizationError(
            "invalid_request", f"The state is longer than {MAX_STATE_LENGTH} characters."
        )


def kept_login_hint(values: Mapping[str, str]) -> str | None:
    """OIDC Core 3.1.2.1: login_hint is a hint the OP MAY use; idp uses it to fill in the email
    field, so one that cannot be an email address is not kept."""
    hint = values.get("login_hint")
    if not hint or len(hint) > MAX_LOGIN_HINT_LENGTH:
        return None
    return hint


def kept_acr_values(values: Mapping[str, str]) -> str | None:
    """OIDC Core 3.1.2.1 / 5.5.1.1: acr_values are voluntary; idp honours the values it defines
    (idp.services.assurance) and ignores the others, so only those are kept, each once."""
    known = [v for v in dict.fromkeys((values.get("acr_values") or "").split())
             if v in ACR_LEVELS]  # fmt: skip
    return " ".join(known) or None


def check_id_token_hint(
    values: Mapping[str, str], client: Client, context: CheckContext
) -> str | None:
    """OIDC Core 3.1.2.1: id_token_hint must be an ID token we issued (expired is fine); its
    ``sub`` says which user the client expects."""
    hint = values.get("id_token_hint")
    if not hint:
        return None
    claims = context.verify_id_token_hint(hint)
    if claims is None or not isinstance(claims.get("sub"), str):
        raise AuthorizationError("invalid_request", "The id_token_hint is not valid.")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else list(audience or [])
    if client.client_id not in audiences:
        raise AuthorizationError(
            "invalid_request", "The id_token_hint was issued to another client."
        )
    return str(claims["sub"])
