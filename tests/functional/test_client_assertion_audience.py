"""A ``private_key_jwt`` assertion's audience (draft-ietf-oauth-rfc7523bis 4, replacing RFC 7523
3 item 3): the issuer identifier as its sole value, the endpoint URLs RFC 7523 first allowed only
while the operator lets clients migrate (``client_assertion_endpoint_audiences``), and never
from an assertion typed ``client-authentication+jwt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import RSAKey

from idp import create_app
from idp.extensions import db
from tests.conftest import app_overrides, sqlite_app
from tests.functional.test_token_errors import (
    ISSUER,
    assertion,
    assertion_request,
    error_of,
)
from tests.support.factories import RegisteredClient, create_client
from tests.support.flow import jwt_parts

TOKEN_ENDPOINT = f"{ISSUER}/token"
DEVICE_ENDPOINT = f"{ISSUER}/device_authorization"


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rp-aud"})


def registered(app: Flask, key: RSAKey) -> RegisteredClient:
    jwks = {"keys": [key.as_dict(private=False)]}
    return create_client(app, auth_method="private_key_jwt", jwks=jwks)


def typed(value: str, key: RSAKey, typ: str = "client-authentication+jwt") -> str:
    header, claims = jwt_parts(value)
    return jwt.encode({**header, "typ": typ}, claims, key, algorithms=["RS256"])


def status(client: FlaskClient, value: str) -> Any:
    response = client.post("/token", data=assertion_request(value))
    return response.status_code if response.status_code == 200 else error_of(response)


def test_a_client_assertion_must_name_the_issuer_as_its_sole_audience(
    app: Flask, client: FlaskClient, key: RSAKey
) -> None:
    """An assertion naming idp's token endpoint may have been signed for a server that
    published that endpoint as its own (audience injection): refused, as is any audience other
    than the issuer alone; the issuer, as a string or a one-member array, authenticates."""
    rp = registered(app, key)
    for aud in (TOKEN_ENDPOINT, DEVICE_ENDPOINT, [ISSUER, TOKEN_ENDPOINT],
                [ISSUER, "https://elsewhere.example"], f"{ISSUER}/", []):  # fmt: skip
        assert status(client, assertion(rp.client_id, key, aud=aud)) == "invalid_client", aud
    assert status(client, assertion(rp.client_id, key, aud=ISSUER)) == 200
    assert status(client, assertion(rp.client_id, key, aud=[ISSUER])) == 200
    assert status(client, typed(assertion(rp.client_id, key, aud=ISSUER), key)) == 200


@pytest.fixture
def migrating_app(tmp_path: Path) -> Flask:
    return sqlite_app(tmp_path, client_assertion_endpoint_audiences=True)


def test_while_clients_migrate_the_endpoints_are_accepted_but_never_from_a_typed_assertion(
    migrating_app: Flask, key: RSAKey
) -> None:
    """With ``client_assertion_endpoint_audiences`` the token and device authorization endpoint
    URLs authenticate as RFC 7523 had them; an assertion typed ``client-authentication+jwt``
    declares it follows the update and is held to the issuer; another server's URL never."""
    client = migrating_app.test_client()
    rp = registered(migrating_app, key)
    for aud in (TOKEN_ENDPOINT, DEVICE_ENDPOINT, [ISSUER, TOKEN_ENDPOINT], ISSUER):
        assert status(client, assertion(rp.client_id, key, aud=aud)) == 200, aud
    assert status(client, assertion(rp.client_id, key, aud="https://elsewhere.example/token")) == (
        "invalid_client"
    )
    for typ in ("client-authentication+jwt", "application/Client-Authentication+JWT"):
        token_aud = typed(assertion(rp.client_id, key, aud=TOKEN_ENDPOINT), key, typ)
        assert status(client, token_aud) == "invalid_client", typ
        assert status(client, typed(assertion(rp.client_id, key, aud=ISSUER), key, typ)) == 200


def test_a_client_assertion_is_spent_once_across_nodes_and_endpoints_even_by_a_failed_request(
    storage_app: Flask, key: RSAKey, tmp_path: Path
) -> None:
    """RFC 7523 3 item 7: a ``jti`` is accepted once. The spent record is a row of the shared
    database, written whether or not the request it authenticated succeeds: another node, the
    revocation endpoint or a second grant cannot use it again (SQLite, PostgreSQL)."""
    rp = registered(storage_app, key)
    value = assertion(rp.client_id, key)
    failed = storage_app.test_client().post(
        "/token", data={**assertion_request(value), "grant_type": "authorization_code",
                        "code": "not-a-code", "redirect_uri": "https://rp.example/cb"},
    )  # fmt: skip
    assert error_of(failed) == "invalid_grant"
    url = storage_app.config["SQLALCHEMY_DATABASE_URI"]
    other_node = create_app(app_overrides(str(url), tmp_path))
    try:
        for node in (storage_app, other_node):
            assert status(node.test_client(), value) == "invalid_client"
            form = {**assertion_request(value), "token": "x"}
            assert error_of(node.test_client().post("/revoke", data=form)) == "invalid_client"
        fresh = assertion(rp.client_id, key)
        assert status(other_node.test_client(), fresh) == 200
        assert status(storage_app.test_client(), fresh) == "invalid_client"
    finally:
        with other_node.app_context():
            db.engine.dispose()
