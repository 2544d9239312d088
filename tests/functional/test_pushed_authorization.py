"""Pushed authorization requests (RFC 9126) through the Flask test client, on SQLite and
PostgreSQL: the PAR endpoint (client authentication as at /token, the checks of /authorize, the
201 answer, what is stored, the budget of public clients), the request_uri at /authorize (one
client, unexpired, spent once, only the pushed parameters), and the requirement to push, per
client and for the deployment. The parallel spend is tests/functional/test_pushed_races.py."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import RSAKey
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.models import AuditEvent, PendingAuthorization, PushedAuthorizationRequest
from idp.models.base import utcnow
from idp.services.crypto import token_hash
from idp.services.pending_authorizations import REQUEST_URI_PREFIX
from idp.settings import Settings
from tests.conftest import sqlite_app
from tests.support.apps import app_on
from tests.support.clock import app_clock
from tests.support.factories import CreatedUser, RegisteredClient, create_client, create_user, rows
from tests.support.flow import RelyingParty, client_assertion, query_of, start_session

ISSUER = "http://localhost"
PER_ADDRESS = Settings.anonymous_requests_per_address
ADDRESS = "198.51.100.77"
REDIRECT_URI_A = "https://rp.example/callback"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def basic(registered: RegisteredClient) -> dict[str, str]:
    raw = f"{registered.client_id}:{registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def push(rp: RelyingParty, *, headers: dict[str, str] | None = None, **overrides: Any
         ) -> TestResponse:  # fmt: skip
    """POST /par with the RP's authorization parameters, authenticated by its secret in a Basic
    header (a public client: its client_id alone, in the body)."""
    if headers is None:
        headers = basic(rp.registered) if rp.registered.client_secret else {}
    return rp.browser.post("/par", data=rp.authorize_params(**overrides), headers=headers,
                           environ_base={"REMOTE_ADDR": ADDRESS})  # fmt: skip


def pushed_uri(rp: RelyingParty, **overrides: Any) -> str:
    response = push(rp, **overrides)
    assert response.status_code == 201, response.text
    request_uri: str = response.get_json()["request_uri"]
    return request_uri


def authorize_pushed(rp: RelyingParty, request_uri: str, **extra: str) -> TestResponse:
    query = {"client_id": rp.registered.client_id, "request_uri": request_uri, **extra}
    return rp.browser.get("/authorize", query_string=query)


def sign_in_via(rp: RelyingParty, response: TestResponse, user: CreatedUser) -> dict[str, str]:
    """From /authorize's redirect to /login?request=..., sign in and follow to the callback."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith("/login?request="), location
    return rp.follow_to_callback(rp.sign_in(location, user))


def error_of(response: TestResponse) -> str:
    error: str = response.get_json()["error"]
    return error


@pytest.fixture
def rp(storage_app: Flask) -> RelyingParty:
    return RelyingParty(storage_app.test_client(), create_client(storage_app))


@pytest.fixture
def user(storage_app: Flask) -> CreatedUser:
    return create_user(storage_app)


# -- the PAR endpoint ------------------------------------------------------------------------------
def test_a_pushed_request_signs_in_and_its_code_is_exchanged(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 9126 2.2: 201, a request_uri of the urn form with at least 128 random bits,
    expires_in, no-store; RFC 9126 4: /authorize with client_id and request_uri only signs in and
    answers with the pushed state; the code is exchanged with the pushed PKCE verifier."""
    response = push(rp)
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"request_uri", "expires_in"}
    assert body["expires_in"] == Settings.par_request_ttl == 60
    assert body["request_uri"].startswith(REQUEST_URI_PREFIX)
    assert len(body["request_uri"].removeprefix(REQUEST_URI_PREFIX)) >= 22  # 128 bits, base64

    callback = sign_in_via(rp, authorize_pushed(rp, body["request_uri"]), user)
    assert callback["state"] == rp.state
    assert callback["iss"] == ISSUER
    tokens = rp.exchange(callback["code"])
    assert tokens.status_code == 200, tokens.text


def test_only_the_hash_of_a_request_uri_is_stored(storage_app: Flask, rp: RelyingParty) -> None:
    """docs/security.md: a secret is stored as its SHA-256; the request_uri's random part is
    nowhere in the row."""
    request_uri = pushed_uri(rp)
    secret = request_uri.removeprefix(REQUEST_URI_PREFIX)
    (stored,) = rows(storage_app, PushedAuthorizationRequest)
    assert stored.secret_hash == token_hash(secret)
    assert secret not in repr(vars(stored))
    assert stored.client_id == rp.registered.client_id


def test_a_push_with_a_wrong_secret_is_invalid_client_401_with_a_challenge(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """RFC 9126 2 and 2.3: the client authenticates as at the token endpoint, and a failure is
    answered as there (RFC 6749 5.2: 401 and a Basic challenge for the Authorization header)."""
    wrong = RegisteredClient(rp.registered.client_id, "not-the-secret", rp.registered.redirect_uri)
    response = push(rp, headers=basic(wrong))
    assert response.status_code == 401
    assert error_of(response) == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="idp"')
    assert response.headers["Cache-Control"] == "no-store"
    no_auth = push(rp, headers={})  # a confidential client's client_id alone
    assert no_auth.status_code in (400, 401)
    assert error_of(no_auth) == "invalid_client"
    assert rows(storage_app, PushedAuthorizationRequest) == []


def test_a_push_authenticates_with_private_key_jwt(storage_app: Flask) -> None:
    """RFC 9126 2: every method the token endpoint accepts, private_key_jwt included, its
    assertion naming the issuer (draft-ietf-oauth-rfc7523bis 4, as at /token)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "par-rp"})
    jwks = {"keys": [key.as_dict(private=False)]}
    registered = create_client(storage_app, auth_method="private_key_jwt", jwks=jwks)
    rp = RelyingParty(storage_app.test_client(), registered)
    form = {
        **rp.authorize_params(),
        "client_assertion": client_assertion(registered.client_id, key, ISSUER),
        "client_assertion_type": JWT_BEARER,
    }
    response = rp.browser.post("/par", data=form)
    assert response.status_code == 201, response.text
    form["client_assertion"] = client_assertion(registered.client_id, key, "https://other.example")
    assert error_of(rp.browser.post("/par", data=form)) == "invalid_client"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"redirect_uri": "https://evil.example/callback"}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"scope": "nothing-registered"}, "invalid_scope"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"prompt": "sometimes"}, "invalid_request"),
        ({"prompt": "none login"}, "invalid_request"),
        ({"max_age": "-1"}, "invalid_request"),
        ({"nonce": "n" * 600}, "invalid_request"),
        ({"id_token_hint": "not.a.token"}, "invalid_request"),
        ({"response_mode": "fragment"}, "invalid_request"),
    ],
    ids=["redirect_uri", "no_pkce", "plain_pkce", "scope", "response_type", "prompt",
         "prompt_none_combined", "max_age", "nonce", "id_token_hint", "response_mode"],
)  # fmt: skip
def test_a_pushed_request_is_checked_as_authorize_checks_one(
    storage_app: Flask, rp: RelyingParty, overrides: dict[str, Any], error: str
) -> None:
    """RFC 9126 2.1 and 2.3: the pushed parameters are validated as at the authorization
    endpoint (idp.oidc.checks, the same functions): the error /authorize would send, as JSON,
    no-store, and nothing stored."""
    response = push(rp, **overrides)
    assert response.status_code == 400, response.text
    assert error_of(response) == error
    assert response.headers["Cache-Control"] == "no-store"
    assert rows(storage_app, PushedAuthorizationRequest) == []


@pytest.mark.parametrize("name", ["scope", "redirect_uri", "code_challenge", "state"])
def test_a_parameter_pushed_twice_is_refused(
    storage_app: Flask, rp: RelyingParty, name: str
) -> None:
    """RFC 6749 3.1: parameters "MUST NOT be included more than once", in a push as at
    /authorize (RFC 9126 2.1): a repeated one is invalid_request, never its first value taken,
    and nothing is stored (refused by the token side's one-value rule, idp.oidc.token_request,
    and by /authorize's own check behind it)."""
    params = rp.authorize_params()
    body = MultiDict([*params.items(), (name, params[name])])
    response = rp.browser.post("/par", data=body, headers=basic(rp.registered))
    assert response.status_code == 400, response.text
    assert error_of(response) == "invalid_request"
    assert rows(storage_app, PushedAuthorizationRequest) == []


def test_a_pushed_request_uri_is_refused(storage_app: Flask, rp: RelyingParty) -> None:
    """RFC 9126 2.1: request_uri "MUST NOT be provided" in a push."""
    response = push(rp, request_uri=REQUEST_URI_PREFIX + "x" * 43)
    assert response.status_code == 400
    assert error_of(response) == "invalid_request"
    assert rows(storage_app, PushedAuthorizationRequest) == []


def test_a_pushed_request_object_is_not_supported(storage_app: Flask, rp: RelyingParty) -> None:
    """Request objects stay unsupported (docs/integrating.md; RFC 9126 3 is optional): the
    authorization endpoint's own answer, request_not_supported (OIDC Core 3.1.2.6)."""
    response = push(rp, request="eyJhbGciOiJub25lIn0.e30.")
    assert response.status_code == 400
    assert error_of(response) == "request_not_supported"


def test_parameters_in_the_query_are_refused(storage_app: Flask, rp: RelyingParty) -> None:
    """RFC 9126 2.1: the push is a POST with its parameters in the body (form-encoded). A public
    client's client_id in the query authenticated it (Authlib reads the query too), and a
    confidential client's query was silently dropped: both are invalid_request, nothing stored."""
    public = create_client(storage_app, public=True, redirect_uris=["https://spa.example/cb"])
    spa = RelyingParty(storage_app.test_client(), public)
    body = spa.authorize_params()
    del body["client_id"]
    response = spa.browser.post("/par", data=body, query_string={"client_id": public.client_id},
                                environ_base={"REMOTE_ADDR": ADDRESS})  # fmt: skip
    assert response.status_code == 400, response.text
    assert error_of(response) == "invalid_request"
    assert response.headers["Cache-Control"] == "no-store"
    response = rp.browser.post("/par", data=rp.authorize_params(), headers=basic(rp.registered),
                               query_string={"prompt": "none"})  # fmt: skip
    assert response.status_code == 400, response.text
    assert error_of(response) == "invalid_request"
    assert rows(storage_app, PushedAuthorizationRequest) == []
    # The same pushes with everything in the body are taken.
    assert spa.browser.post("/par", data=spa.authorize_params()).status_code == 201
    assert push(rp).status_code == 201


def test_a_client_id_other_than_the_authenticated_client_is_refused(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """RFC 6749 3.2.1 as at /token: client_id beside the Basic header names the same client."""
    other = create_client(storage_app, name="Other")
    response = push(rp, client_id=other.client_id)
    assert response.status_code == 400
    assert error_of(response) == "invalid_request"
    assert rows(storage_app, PushedAuthorizationRequest) == []


def test_a_client_authenticated_by_its_basic_header_names_itself(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """RFC 9126 2.1 requires client_id; a client that authenticated by its Basic header alone
    names itself, also with a client_id sent without a value (RFC 6749 3.1: as if omitted)."""
    for client_id in (None, ""):
        response = push(rp, client_id=client_id)
        assert response.status_code == 201, (client_id, response.text)
    assert len(rows(storage_app, PushedAuthorizationRequest)) == 2


@pytest.mark.usefixtures("clock")  # within one budget window
def test_a_public_clients_pushes_are_within_the_address_budget(storage_app: Flask) -> None:
    """docs/operations.md, "Storage budgets": a public client's client_id authenticates nobody,
    so its pushes are anonymous writes: at most the address's budget is stored, the rest are
    429 temporarily_unavailable (RFC 9126 2.3), and another address has its own budget."""
    public = create_client(storage_app, public=True, redirect_uris=["https://spa.example/cb"])
    rp = RelyingParty(storage_app.test_client(), public)
    answers = [push(rp).status_code for _ in range(PER_ADDRESS + 5)]
    assert answers.count(201) == PER_ADDRESS
    assert answers[-5:] == [429] * 5
    assert error_of(push(rp)) == "temporarily_unavailable"
    assert len(rows(storage_app, PushedAuthorizationRequest)) == PER_ADDRESS
    elsewhere = rp.browser.post("/par", data=rp.authorize_params(),
                                environ_base={"REMOTE_ADDR": "203.0.113.9"})  # fmt: skip
    assert elsewhere.status_code == 201


@pytest.mark.usefixtures("clock")
def test_a_confidential_clients_pushes_are_not_counted_against_its_address(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """A confidential client authenticated: its backend pushes for all its users from one
    address, which the anonymous budget must not throttle."""
    answers = [push(rp).status_code for _ in range(PER_ADDRESS + 2)]
    assert set(answers) == {201}


PER_CLIENT = 10


@pytest.fixture(params=["sqlite", "postgresql"])
def bounded_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app whose confidential clients may push ``PER_CLIENT`` requests a minute, on each
    database (the counters are rows there without Redis)."""
    with app_on(request.param, tmp_path, par_requests_per_client=PER_CLIENT) as flask_app:
        yield flask_app


def test_a_confidential_clients_pushes_are_bounded_per_client(bounded_app: Flask) -> None:
    """Each push of a confidential client, taken or refused by /authorize's checks, writes an
    audit row kept for a year (``audit_retention_days``), and its pushes are no anonymous
    writes, so no address budget bounds them: one client, or whoever holds its secret, wrote
    without bound. ``par_requests_per_client`` pushes a minute are taken, refused ones counted
    too; then 429 ``temporarily_unavailable`` (RFC 9126 2.3), nothing stored, from any address,
    audited once per client and window (tests/functional/test_pushed_audit.py); another client
    has its own budget, and the next minute a new one."""
    frozen = FrozenClock(utcnow())
    with app_clock(bounded_app, frozen):
        rp = RelyingParty(bounded_app.test_client(), create_client(bounded_app))
        refused = [push(rp, scope="nothing-registered").status_code for _ in range(2)]
        assert refused == [400, 400]
        answers = [push(rp).status_code for _ in range(PER_CLIENT)]
        assert answers == [201] * (PER_CLIENT - 2) + [429] * 2
        elsewhere = rp.browser.post("/par", data=rp.authorize_params(),
                                    headers=basic(rp.registered),
                                    environ_base={"REMOTE_ADDR": "203.0.113.9"})  # fmt: skip
        assert elsewhere.status_code == 429
        assert error_of(elsewhere) == "temporarily_unavailable"
        assert elsewhere.headers["Cache-Control"] == "no-store"
        assert len(rows(bounded_app, PushedAuthorizationRequest)) == PER_CLIENT - 2
        audited = rows(bounded_app, AuditEvent, AuditEvent.kind.startswith("authorization.push"))
        assert len(audited) == PER_CLIENT + 1  # the first refusal past the budget
        other = RelyingParty(bounded_app.test_client(), create_client(bounded_app, name="Other"))
        assert push(other).status_code == 201
        frozen.advance(timedelta(minutes=1))
        assert push(rp).status_code == 201


def test_a_single_page_app_can_push_from_its_page(storage_app: Flask) -> None:
    """A public single-page app pushes from its page's origin, as it calls the token endpoint
    (CORS: the preflight, then answers any origin may read; no credentials, no cookie read)."""
    public = create_client(storage_app, public=True, redirect_uris=["https://spa.example/cb"])
    rp = RelyingParty(storage_app.test_client(), public)
    origin = {"Origin": "https://spa.example"}
    preflight = rp.browser.options("/par", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })  # fmt: skip
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    pushed = push(rp, headers=origin)
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["Access-Control-Allow-Origin"] == "*"
    refused = push(rp, headers=origin, code_challenge=None, code_challenge_method=None)
    assert refused.status_code == 400
    assert refused.headers["Access-Control-Allow-Origin"] == "*"


# -- the request_uri at /authorize -----------------------------------------------------------------
def test_a_request_uri_is_spent_once(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 9126 4: one-time use (the consume-once primitive): the second /authorize with the
    same request_uri is an error page, and signing in through the first still works."""
    request_uri = pushed_uri(rp)
    first = authorize_pushed(rp, request_uri)
    again = authorize_pushed(rp, request_uri)
    assert again.status_code == 400
    assert "Location" not in again.headers
    assert sign_in_via(rp, first, user)["state"] == rp.state


def test_the_sign_in_page_of_a_pushed_request_survives_a_reload(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """A pushed request's sign-in page is /login?request=<pending id>, not /authorize's answer:
    reloading it needs no request_uri (spent), and the sign-in after the reload completes."""
    response = authorize_pushed(rp, pushed_uri(rp))
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/login?request=")
    for _ in range(2):
        assert rp.browser.get(location).status_code == 200
    assert len(rows(storage_app, PendingAuthorization)) == 1
    callback = rp.follow_to_callback(rp.sign_in(location, user))
    assert callback["state"] == rp.state


def test_a_request_uri_is_only_for_the_client_that_pushed_it(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 9126 4 (and RFC 9101 5.2.3): the request_uri is bound to the client that pushed it;
    another client_id gets an error page and spends nothing."""
    other = create_client(storage_app, name="Other")
    request_uri = pushed_uri(rp)
    response = rp.browser.get(
        "/authorize", query_string={"client_id": other.client_id, "request_uri": request_uri}
    )
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert sign_in_via(rp, authorize_pushed(rp, request_uri), user)["state"] == rp.state


def test_an_expired_request_uri_is_refused(
    storage_app: Flask, rp: RelyingParty, clock: FrozenClock
) -> None:
    """RFC 9126 4: "An expired request_uri MUST be rejected as invalid" (par_request_ttl)."""
    request_uri = pushed_uri(rp)
    clock.advance(timedelta(seconds=Settings.par_request_ttl + 1))
    response = authorize_pushed(rp, request_uri)
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_an_unknown_request_uri_is_refused(storage_app: Flask, rp: RelyingParty) -> None:
    for unknown in (REQUEST_URI_PREFIX + "x" * 43, "https://rp.example/request.jwt", "x" * 500):
        response = authorize_pushed(rp, unknown)
        assert response.status_code == 400, unknown
        assert "Location" not in response.headers


def test_parameters_beside_the_request_uri_are_ignored(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 9126 4: the authorization server uses the pushed parameters only: a redirect_uri,
    state, scope, PKCE challenge, prompt, response_mode or login_hint added in the browser's
    address changes nothing (max_age and prompt=login: the next test)."""
    other_uri = "https://rp.example/other"
    registered = create_client(storage_app, redirect_uris=[REDIRECT_URI_A, other_uri])
    rp = RelyingParty(storage_app.test_client(), registered)
    response = authorize_pushed(
        rp, pushed_uri(rp), redirect_uri=other_uri, state="forged", scope="openid",
        code_challenge="A" * 43, code_challenge_method="S256", prompt="none",
        response_mode="form_post", login_hint="someone@example.com",
    )  # fmt: skip
    assert "someone" not in response.headers.get("Location", "")
    callback = sign_in_via(rp, response, user)
    assert callback["state"] == rp.state
    tokens = rp.exchange(callback["code"])  # the pushed redirect_uri and verifier
    assert tokens.status_code == 200, tokens.text
    assert "offline_access" in tokens.get_json()["scope"]


def test_a_signed_in_user_gets_the_code_at_once(
    storage_app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    """A signed-in user's pushed request gets its code at once; a max_age or prompt=login
    beside the request_uri asks for no new sign-in: only the pushed parameters count (RFC 9126
    4)."""
    start_session(rp.browser, user)
    response = authorize_pushed(rp, pushed_uri(rp), max_age="0", prompt="login")
    assert response.status_code == 302
    callback = query_of(response.headers["Location"])
    assert callback["state"] == rp.state
    assert rp.exchange(callback["code"]).status_code == 200


# -- requiring PAR ---------------------------------------------------------------------------------
def test_a_client_that_requires_par_is_refused_a_request_not_pushed(
    storage_app: Flask, user: CreatedUser
) -> None:
    """RFC 9126 4 and 6: a client registered with require_pushed_authorization_requests gets
    invalid_request at /authorize without a request_uri, sent to its (verified) redirect URI;
    its pushed requests sign in."""
    registered = create_client(storage_app, require_pushed_authorization_requests=True)
    rp = RelyingParty(storage_app.test_client(), registered)
    response = rp.authorize()
    assert response.status_code == 302
    refused = query_of(response.headers["Location"])
    assert refused["error"] == "invalid_request"
    assert refused["state"] == rp.state
    assert "code" not in refused
    assert rows(storage_app, PendingAuthorization) == []
    callback = sign_in_via(rp, authorize_pushed(rp, pushed_uri(rp)), user)
    assert rp.exchange(callback["code"]).status_code == 200


def test_the_deployment_can_require_par_of_every_client(tmp_path: Path) -> None:
    """RFC 9126 5: ``require_pushed_authorization_requests`` for the deployment, in discovery
    too; every client's request not pushed is refused, a pushed one is not."""
    app = sqlite_app(tmp_path, require_pushed_authorization_requests=True)
    rp = RelyingParty(app.test_client(), create_client(app))
    metadata = rp.browser.get("/.well-known/openid-configuration").get_json()
    assert metadata["require_pushed_authorization_requests"] is True
    assert query_of(rp.authorize().headers["Location"])["error"] == "invalid_request"
    response = authorize_pushed(rp, pushed_uri(rp))
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?request=")


def test_discovery_names_the_par_endpoint(client: FlaskClient) -> None:
    """RFC 9126 5."""
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["pushed_authorization_request_endpoint"] == f"{ISSUER}/par"
    assert metadata["require_pushed_authorization_requests"] is False
