"""A token-side request is one client authenticating one way (RFC 6749 2.3, 2.3.1, 3.2.1;
RFC 7521 4.2): a request that names two clients, or that authenticates with more than one
method, is refused before anything is issued, revoked or disclosed."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from tests.support.factories import CreatedUser, RegisteredClient, create_client
from tests.support.flow import RelyingParty

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def basic(registered: RegisteredClient) -> dict[str, str]:
    raw = f"{registered.client_id}:{registered.client_secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def refused(response: TestResponse) -> None:
    # RFC 6749 5.2 invalid_request: the request "utilizes more than one mechanism for
    # authenticating the client, or is otherwise malformed".
    assert response.status_code == 400, (response.status_code, response.text)
    body = response.get_json()
    assert body["error"] == "invalid_request", body
    assert "access_token" not in body
    assert "active" not in body


@pytest.fixture
def other(app: Flask) -> RegisteredClient:
    return create_client(app, name="Other")


def test_token_request_naming_two_clients_is_invalid_request(
    rp: RelyingParty, other: RegisteredClient, user: CreatedUser
) -> None:
    """RFC 6749 3.2.1: client_id in the body identifies the client; with Basic as A it must name
    A. Basic as A with client_id=B was accepted and A got the tokens."""
    code = rp.obtain_code(user)["code"]
    response = rp.browser.post(
        "/token",
        headers=basic(rp.registered),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": rp.registered.redirect_uri,
            "code_verifier": rp.verifier,
            "client_id": other.client_id,
        },
    )
    refused(response)
    # The code is not spent by the refused request: the right request still redeems it.
    assert rp.exchange(code).status_code == 200


def test_the_same_client_id_beside_basic_is_accepted(rp: RelyingParty) -> None:
    """RFC 6749 3.2.1: a client MAY send client_id beside its Basic credentials."""
    response = rp.browser.post(
        "/token",
        headers=basic(rp.registered),
        data={"grant_type": "client_credentials", "client_id": rp.registered.client_id},
    )
    assert response.status_code == 200, response.text


def test_basic_and_client_secret_in_the_body_is_invalid_request(rp: RelyingParty) -> None:
    """RFC 6749 2.3: the client MUST NOT use more than one authentication method per request."""
    response = rp.browser.post(
        "/token",
        headers=basic(rp.registered),
        data={
            "grant_type": "client_credentials",
            "client_id": rp.registered.client_id,
            "client_secret": rp.registered.client_secret,
        },
    )
    refused(response)


def test_a_client_assertion_beside_basic_is_invalid_request(
    app: Flask, client: FlaskClient
) -> None:
    """RFC 6749 2.3 (one method), RFC 7521 4.2 (client_id and assertion name one client)."""
    key = RSAKey.generate_key(2048, parameters={"kid": "rp-key"})
    jwt_client = create_client(
        app, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    secret_client = create_client(app, name="Secret")
    now = int(time.time())
    claims = {
        "iss": jwt_client.client_id,
        "sub": jwt_client.client_id,
        "aud": "http://localhost",
        "jti": secrets.token_urlsafe(16),
        "iat": now,
        "exp": now + 60,
    }
    value = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key, algorithms=["RS256"])
    form: dict[str, Any] = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": value,
    }
    refused(client.post("/token", data=form, headers=basic(secret_client)))
    # RFC 7521 4.2: a client_id beside an assertion must identify the assertion's client.
    refused(client.post("/token", data={**form, "client_id": secret_client.client_id}))


@pytest.mark.parametrize("endpoint", ["/revoke", "/introspect"])
def test_revocation_and_introspection_naming_two_clients_are_invalid_request(
    rp: RelyingParty, other: RegisteredClient, user: CreatedUser, endpoint: str
) -> None:
    """RFC 7009 2.1 and RFC 7662 2.1 authenticate the client as RFC 6749 2.3 does."""
    tokens = rp.tokens_for(user)
    response = rp.browser.post(
        endpoint,
        headers=basic(rp.registered),
        data={"token": tokens["access_token"], "client_id": other.client_id},
    )
    refused(response)
    assert rp.userinfo(tokens["access_token"]).status_code == 200


def test_a_parameter_repeated_at_revocation_introspection_or_device_authorization_is_refused(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RFC 6749 3.2 (which RFC 7009 2.1, RFC 7662 2.1 and RFC 8628 3.1 build on): no parameter
    more than once, as at the token endpoint. A repeated ``token`` was read as its first value:
    ``token=x&token=<refresh token>`` answered 200, revoked nothing and left the refresh token
    live, and introspection disclosed the first of two tokens."""
    headers = basic(rp.registered)
    refresh, access = tokens["refresh_token"], tokens["access_token"]
    refused(
        rp.browser.post(
            "/revoke", headers=headers, data=MultiDict([("token", "x"), ("token", refresh)])
        )
    )
    refused(
        rp.browser.post(
            "/introspect", headers=headers, data=MultiDict([("token", access), ("token", "x")])
        )
    )
    refused(
        rp.browser.post(
            "/introspect",
            headers=headers,
            data=MultiDict(
                [
                    ("token", access),
                    ("token_type_hint", "access_token"),
                    ("token_type_hint", "refresh_token"),
                ]
            ),
        )
    )
    device = create_client(
        app,
        name="TV",
        public=True,
        redirect_uris=[],
        grant_types=["urn:ietf:params:oauth:grant-type:device_code"],
    )
    refused(
        rp.browser.post(
            "/device_authorization",
            data=MultiDict(
                [
                    ("scope", "openid"),
                    ("client_id", device.client_id),
                    ("client_id", device.client_id),
                ]
            ),
        )
    )
    # The refresh token the refused revocation named still works: nothing was revoked.
    assert rp.refresh(refresh).status_code == 200
