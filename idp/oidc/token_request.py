"""The request Authlib reads at the token side, made cheaply from Flask's (docs/performance.md)."""

from __future__ import annotations

import functools
import os
from typing import Any

from authlib.common.security import is_secure_transport
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError, InvalidRequestError
from flask import Request
from werkzeug.datastructures import MultiDict

from idp.oidc.client_auth import mixed_authentication_refusal
from idp.oidc.errors import error_description


@functools.lru_cache(maxsize=64)
def _secure_origin(origin: str, insecure_allowed: str | None) -> bool:
    """Authlib's own transport verdict (RFC 6749 1.6 and 3.2: TLS; RFC 8252 7.3: loopback), once
    per origin: it parses the URL and the host as an IP address on every call, for an answer
    that depends only on the origin and on ``AUTHLIB_INSECURE_TRANSPORT``, which Authlib reads
    itself and which is therefore part of the key. Bounded: the host is the client's to choose."""
    return is_secure_transport(origin)


def repeated_parameter(form: MultiDict[str, str]) -> str | None:
    """The first parameter the body ``form`` carries more than once, None when each comes once
    (RFC 6749 3.2: "Request and response parameters MUST NOT be included more than once";
    Authlib would read the first value). A Werkzeug ``MultiDict`` keeps a list per name, read
    here as the dictionary it is, without copying. The query is refused before it is read
    (``parameters_refusal``), so the body is the only place a parameter can come twice."""
    for name, values in dict.items(form):
        if len(values) > 1:
            return str(name)
    return None


#: The endpoints besides the token endpoint whose client sends OAuth's form-encoded parameters in
#: the body, each once (RFC 6749 3.2, which RFC 7009 2.1, RFC 7662 2.1, RFC 8628 3.1 and RFC 9126
#: 2.1 build on): a repeated ``token`` was read as its first value, so a revocation could revoke
#: another token than the client meant and answer 200 all the same.
BODY_PARAMETER_ENDPOINTS = frozenset(
    {"revocation", "introspection", "device_authorization", "pushed_authorization"}
)
#: The refusal of a parameter in the request's URL (``parameters_refusal``).
QUERY_REFUSED = "Send the parameters in the request body, not in the query."


def parameters_refusal(request: Any) -> InvalidRequestError | None:
    """The token side's refusal of where a request put its parameters, before any is read:

    - any parameter in the query: the token request's parameters are "in the HTTP request
      entity-body" (RFC 6749 3.2, 4.1.3; RFC 7009 2.1, RFC 7662 2.1, RFC 8628 3.1 and RFC 9126
      2.1 the same for theirs), and client credentials "MUST NOT be included in the request URI"
      (RFC 6749 2.3.1). Authlib reads the query too, so a client_id, a client_secret or a code
      sent there was taken, and a URL ends up in logs, proxies and browser history;
    - a parameter more than once in the body (RFC 6749 3.2, ``repeated_parameter``).

    Without a query string (every request a well-behaved client sends, the benchmark's too) the
    query costs one lookup in the WSGI environment, the one the check of repeated parameters
    made before (docs/performance.md): its parameters are never parsed."""
    if request.environ.get("QUERY_STRING") and request.args:
        return InvalidRequestError(QUERY_REFUSED)
    repeated = repeated_parameter(request.form)
    if repeated is None:
        return None
    return InvalidRequestError(error_description(f"The '{repeated}' parameter must appear once."))


#: The WSGI environment's mark of a request whose parameters ``proof_request_refusal`` found
#: in place: the server does not check them again (``parameters_refusal``, once per request).
PARAMETERS_CHECKED = "idp.parameters_checked"


def proof_request_refusal(request: Request) -> InvalidRequestError | None:
    """The refusal of a token or PAR request that carries a DPoP proof, before the proof is
    checked (idp.oidc.token_views ``_proved``), or None: its parameters' place
    (``parameters_refusal``), then more than one client authentication method or more than one
    client named (RFC 6749 2.3: "MUST NOT use more than one authentication method in each
    request"; ``mixed_authentication_refusal``), each ``invalid_request`` (RFC 6749 5.2). Each
    check once: the request is marked ``PARAMETERS_CHECKED``, and the server's client
    authentication skips the methods' check for a request whose checked proof waits in ``g``
    (idp.oidc.server)."""
    refusal = parameters_refusal(request)
    if refusal is not None:
        return refusal
    request.environ[PARAMETERS_CHECKED] = True
    mixed = mixed_authentication_refusal(request)
    return None if mixed is None else InvalidRequestError(mixed)


class TokenSidePayload(FlaskOAuth2Payload):
    """Authlib's payload of a Flask request (the query and the form together, RFC 6749 3.2 and
    4.4.2), with Werkzeug's combined view of them looked up once: Authlib reads it for every
    parameter (the grant type alone once per registered grant), and each read went through
    Werkzeug's cached property again. The values are Werkzeug's, unchanged: without a query
    string, Werkzeug's ``values`` of a request other than GET is its form behind an empty query
    (``Request.values``), and the form alone is what each read finds, without parsing the empty
    query and looking in it first."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self._values: MultiDict[str, str]
        if request.method != "GET" and not request.environ.get("QUERY_STRING"):
            self._values = request.form
        else:
            self._values = request.values

    @property
    def data(self) -> Any:
        return self._values


class TokenSideRequest(OAuth2Request):
    """Authlib's view of a request at the token side (token, device authorization, revocation,
    introspection, logout), made from Flask's request object itself.

    Authlib's own (``FlaskOAuth2Request``) holds Flask's context proxy, through which each of the
    many reads of the payload a grant makes finds the request again, and builds the whole URL
    for the one use Authlib makes of it: the transport check (RFC 6749 1.6 and 3.2: TLS), which
    reads only the scheme and the host. ``uri`` is therefore the origin alone; nothing at the
    token side reads its path (docs/performance.md)."""

    def __init__(self, request: Request, *, https_issuer: bool = False) -> None:
        origin = f"{request.scheme}://{request.host}/"
        # What ``OAuth2Request.__init__`` checks first, with the verdict remembered per origin;
        # the attributes below are the rest of that constructor (a unit test compares them).
        # With an https issuer (``https_issuer``) the deployment ends TLS, often at a balancer
        # that talks plain http to idp and need not say so: the issuer's scheme is the verdict,
        # not the last hop's (docs/operations.md, "Load balancer"), unless a trusted proxy said
        # which scheme the client used (X-Forwarded-Proto applied by ProxyFix, ``trusted_proxies``).
        environ = request.environ
        proxy_said = "werkzeug.proxy_fix.orig" in environ and "HTTP_X_FORWARDED_PROTO" in environ
        if (not https_issuer or proxy_said) and not _secure_origin(
            origin, os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
        ):
            raise InsecureTransportError()
        self.method = request.method
        self.uri = origin
        # Not ``headers or {}`` as Authlib's: the truth value of Werkzeug's headers counts them
        # by walking the whole WSGI environment.
        self.headers = request.headers
        self._body = None
        self.client = None
        self.auth_method = None
        self.user = None
        self.authorization_code = None
        self.refresh_token = None
        self.credential = None
        self._scope = None
        self._request = request
        self.payload = TokenSidePayload(request)

    @property
    def args(self) -> Any:
        return self._request.args

    @property
    def form(self) -> Any:
        return self._request.form
