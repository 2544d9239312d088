"""The whole authorization code flow through HTTP, as a strict relying party sees it."""

from __future__ import annotations

import base64
import hashlib

from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty


def verify_id_token(client: FlaskClient, token: str) -> dict:
    keys = KeySet.import_key_set(client.get("/jwks").get_json())
    return dict(jwt.decode(token, keys, algorithms=["RS256", "ES256", "EdDSA"]).claims)


def half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_code_flow_issues_verifiable_tokens(app: Flask, client: FlaskClient) -> None:
    user = create_user(app)
    rp = RelyingParty(client, create_client(app))
    callback = rp.obtain_code(user)
    assert callback["state"] == rp.state
    assert callback["iss"] == "http://localhost"

    response = rp.exchange(callback["code"])
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    tokens = response.get_json()
    assert tokens["token_type"] == "Bearer"
    claims = verify_id_token(client, tokens["id_token"])
    assert claims["iss"] == "http://localhost"
    assert claims["sub"] == user.id
    assert claims["aud"] == rp.registered.client_id
    assert claims["nonce"] == rp.nonce
    assert claims["at_hash"] == half_hash(tokens["access_token"])
    assert claims["amr"] == ["pwd"]
    assert {"auth_time", "exp", "iat", "sid", "acr"} <= set(claims)

    info = rp.userinfo(tokens["access_token"])
    assert info.status_code == 200
    assert info.get_json()["sub"] == user.id
    assert info.get_json()["email"] == user.email

    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.get_json()["refresh_token"] != tokens["refresh_token"]
