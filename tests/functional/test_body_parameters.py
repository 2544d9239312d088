"""The token side's endpoints take their parameters from the body only (RFC 6749 2.3.1, 3.2 and
4.1.3; RFC 7009 2.1, RFC 7662 2.1, RFC 8628 3.1, RFC 9126 2.1): a request to the token,
revocation, introspection, device authorization or PAR endpoint whose query string carries a
parameter is ``invalid_request`` (RFC 6749 5.2's JSON error, ``no-store``) before anything is
read or stored. Authlib reads the query too, so a code, a client_id or a token sent in the URL
(which ends up in logs, proxies and browser history) was taken. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable

import pytest
from flask import Flask
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp.models import DeviceAuthorization, PushedAuthorizationRequest, UsedDPoPProof
from idp.oidc import client_auth, server, token_request
from idp.oidc.token_request import QUERY_REFUSED
from idp.services.device import DEVICE_CODE_GRANT_TYPE
from tests.support.dpop import DPoPKey
from tests.support.factories import RegisteredClient, create_client, create_user, rows
from tests.support.flow import RelyingParty


def basic(registered: RegisteredClient) -> dict[str, str]:
    raw = f"{registered.client_id}:{registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def access_token(app: Flask, registered: RegisteredClient) -> str:
    issued = app.test_client().post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(registered)
    )
    assert issued.status_code == 200, issued.text
    token: str = issued.get_json()["access_token"]
    return token


def active(app: Flask, registered: RegisteredClient, token: str) -> bool:
    answer = app.test_client().post("/introspect", data={"token": token}, headers=basic(registered))
    assert answer.status_code == 200, answer.text
    return bool(answer.get_json()["active"])


#: Each case: a request that the endpoint takes when its parameters are all in the body, sent
#: with one of them in the query instead; ``send(in_query)`` returns the answer, and ``after()``
#: checks that the refused request read, spent and stored nothing, then that the same request
#: with everything in the body is taken.
Case = tuple[Callable[[bool], TestResponse], Callable[[], None]]


def token_case(app: Flask) -> Case:
    """A public client's code, in the URL: taken by Authlib from the query and exchanged."""
    public = create_client(app, public=True, redirect_uris=["https://spa.example/cb"])
    rp = RelyingParty(app.test_client(), public)
    code = rp.obtain_code(create_user(app))["code"]
    form = {"grant_type": "authorization_code", "client_id": public.client_id,
            "redirect_uri": public.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip

    def send(in_query: bool) -> TestResponse:
        # With a DPoP proof too: a proof is recorded only once its client authenticated, which
        # a refused request never reaches.
        headers = {"DPoP": DPoPKey().proof()}
        if in_query:
            return rp.browser.post("/token", data=form, query_string={"code": code},
                                   headers=headers)  # fmt: skip
        return rp.browser.post("/token", data={**form, "code": code}, headers=headers)

    def after() -> None:
        assert rows(app, UsedDPoPProof) == []
        assert send(in_query=False).status_code == 200  # the code was not spent

    return send, after


def revocation_case(app: Flask) -> Case:
    registered = create_client(app)
    token = access_token(app, registered)

    def send(in_query: bool) -> TestResponse:
        where = {"query_string": {"token": token}} if in_query else {"data": {"token": token}}
        return app.test_client().post("/revoke", headers=basic(registered), **where)

    def after() -> None:
        assert active(app, registered, token)
        assert send(in_query=False).status_code == 200
        assert not active(app, registered, token)

    return send, after


def introspection_case(app: Flask) -> Case:
    registered = create_client(app)
    token = access_token(app, registered)

    def send(in_query: bool) -> TestResponse:
        where = {"query_string": {"token": token}} if in_query else {"data": {"token": token}}
        return app.test_client().post("/introspect", headers=basic(registered), **where)

    def after() -> None:
        assert send(in_query=False).get_json()["active"] is True

    return send, after


def device_authorization_case(app: Flask) -> Case:
    """A public device client's client_id in the URL: it authenticated the request."""
    device = create_client(app, public=True, redirect_uris=[],
                           grant_types=[DEVICE_CODE_GRANT_TYPE])  # fmt: skip

    def send(in_query: bool) -> TestResponse:
        client_id = {"client_id": device.client_id}
        if in_query:
            return app.test_client().post(
                "/device_authorization", data={"scope": "openid"}, query_string=client_id
            )
        body = {"scope": "openid", **client_id}
        return app.test_client().post("/device_authorization", data=body)

    def after() -> None:
        assert rows(app, DeviceAuthorization) == []
        assert send(in_query=False).status_code == 200

    return send, after


def pushed_authorization_case(app: Flask) -> Case:
    """A confidential client's push with its client_secret in the URL (RFC 6749 2.3.1)."""
    registered = create_client(app, auth_method="client_secret_post")
    rp = RelyingParty(app.test_client(), registered)
    secret = {"client_secret": registered.client_secret or ""}

    def send(in_query: bool) -> TestResponse:
        if in_query:
            return rp.browser.post("/par", data=rp.authorize_params(), query_string=secret)
        return rp.browser.post("/par", data={**rp.authorize_params(), **secret})

    def after() -> None:
        assert rows(app, PushedAuthorizationRequest) == []
        assert send(in_query=False).status_code == 201

    return send, after


CASES: dict[str, Callable[[Flask], Case]] = {
    "/token": token_case,
    "/revoke": revocation_case,
    "/introspect": introspection_case,
    "/device_authorization": device_authorization_case,
    "/par": pushed_authorization_case,
}


@pytest.mark.parametrize("endpoint", list(CASES))
def test_a_parameter_in_the_query_is_invalid_request_and_nothing_is_read(
    storage_app: Flask, endpoint: str
) -> None:
    """RFC 6749 2.3.1 ("MUST NOT be included in the request URI"), 3.2 and 4.1.3, RFC 7009 2.1,
    RFC 7662 2.1, RFC 8628 3.1, RFC 9126 2.1: the parameters travel in the body. One parameter
    in the query is 400 ``invalid_request`` as RFC 6749 5.2's JSON error, not stored by a cache,
    and the request spent (a code, a DPoP proof), revoked and stored nothing; the same request
    with that parameter in the body is taken."""
    send, after = CASES[endpoint](storage_app)
    refused = send(in_query=True)
    assert refused.status_code == 400, refused.text
    assert refused.mimetype == "application/json"
    assert refused.get_json()["error"] == "invalid_request"
    assert "query" in refused.get_json()["error_description"]
    assert refused.headers["Cache-Control"] == "no-store"
    after()


@pytest.mark.parametrize("endpoint", list(CASES))
def test_a_query_string_without_parameters_is_no_refusal(app: Flask, endpoint: str) -> None:
    """Only a parameter is refused: a bare ``?&`` carries none, and the request is answered as
    without it (here: no client, refused for that)."""
    answer = app.test_client().post(endpoint + "?&", data={"scope": "openid"})
    assert answer.get_json().get("error_description") != QUERY_REFUSED, answer.text
    assert answer.status_code in (400, 401), answer.text


@pytest.mark.parametrize("endpoint", ["/token", "/par"])
def test_a_malformed_request_is_refused_before_its_dpop_proof_is_checked(
    app: Flask, endpoint: str
) -> None:
    """A request whose parameters are where they must not be (one in the query, one twice in
    the body) and whose DPoP proof is refused as well is answered for its own malformation,
    ``invalid_request`` (RFC 6749 5.2), as without a proof: the proof was checked first, and
    the answer, ``invalid_dpop_proof`` (RFC 9449 5), sent the client to fix a proof that may
    be right. Nothing is read or recorded either way."""
    registered = create_client(app)
    body = {"grant_type": "client_credentials"} if endpoint == "/token" else {"scope": "openid"}
    for bad_proof in ("not-a-proof", DPoPKey().proof("POST", "https://elsewhere.example/x")):
        headers = {**basic(registered), "DPoP": bad_proof}
        in_query = app.test_client().post(endpoint, data=body, headers=headers,
                                          query_string={"scope": "openid"})  # fmt: skip
        twice = app.test_client().post(endpoint, headers=headers,
                                       data=MultiDict([*body.items(), ("scope", "openid"),
                                                       ("scope", "email")]))  # fmt: skip
        for refused in (in_query, twice):
            assert refused.status_code == 400, refused.text
            assert refused.get_json()["error"] == "invalid_request", refused.text
            assert refused.headers["Cache-Control"] == "no-store"
    assert rows(app, UsedDPoPProof) == []


@pytest.mark.parametrize("endpoint", ["/token", "/par"])
def test_a_dpop_requests_parameters_and_authentication_are_checked_once(
    app: Flask, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token or PAR request with a DPoP proof has its parameters (``repeated_parameter``, RFC
    6749 3.2) and its one authentication method (``mixed_authentication_refusal``, RFC 6749 2.3)
    checked once, before the proof, as a request without one has them checked once by the
    server: the view checked the parameters, then the server again."""
    calls: Counter[str] = Counter()

    def counted(name: str, check: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            calls[name] += 1
            return check(*args)

        return call

    repeated = counted("repeated_parameter", token_request.repeated_parameter)
    monkeypatch.setattr(token_request, "repeated_parameter", repeated)
    mixed = counted("mixed_authentication", client_auth.mixed_authentication_refusal)
    for module in (token_request, server):
        # Where each module looks the check up (token_request: since the view checks it).
        monkeypatch.setattr(module, "mixed_authentication_refusal", mixed, raising=False)
    registered = create_client(app)
    rp = RelyingParty(app.test_client(), registered)
    body = {"grant_type": "client_credentials"} if endpoint == "/token" else rp.authorize_params()
    for proof in (DPoPKey().proof("POST", f"http://localhost{endpoint}"), None):
        calls.clear()
        headers = basic(registered) if proof is None else {**basic(registered), "DPoP": proof}
        answer = app.test_client().post(endpoint, data=body, headers=headers)
        assert answer.status_code in (200, 201), answer.text
        assert calls == {"repeated_parameter": 1, "mixed_authentication": 1}, (proof, calls)
