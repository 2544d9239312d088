"""What idp issues and publishes: ID token and access token claims (OIDC Core 2, 3.1.3.6;
RFC 9068), the UserInfo endpoint (OIDC Core 5.3, RFC 6750), revocation (RFC 7009), introspection
(RFC 7662) and discovery (OIDC Discovery 3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import AccessToken, BrowserSession
from idp.models.base import utcnow
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, jwt_parts

ISSUER = "http://localhost"


def b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: str) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{signature}"


def half_hash(value: str) -> str:
    return b64(hashlib.sha256(value.encode()).digest()[:16])


def published_keys(client: FlaskClient) -> KeySet:
    return KeySet.import_key_set(client.get("/jwks").get_json())


def bearer_error(response: TestResponse) -> str | None:
    """The RFC 6750 3 error of a 401, after checking the challenge names the Bearer scheme."""
    assert response.status_code == 401, response.text
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if 'error="' not in challenge:
        return None
    error = challenge.split('error="', 1)[1].split('"', 1)[0]
    assert response.get_json()["error"] == error
    return error


def introspect(rp: RelyingParty, token: str, **extra: str) -> dict[str, Any]:
    response = rp.browser.post(
        "/introspect", data={"token": token, **extra}, headers=auth_headers(rp)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.get_json()
    return body


def revoke(rp: RelyingParty, token: str, **extra: str) -> TestResponse:
    return rp.browser.post("/revoke", data={"token": token, **extra}, headers=auth_headers(rp))


def auth_headers(rp: RelyingParty) -> dict[str, str]:
    secret = rp.registered.client_secret
    assert secret is not None
    raw = f"{rp.registered.client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


# -- the ID token (OIDC Core 2, 3.1.3.6) ----------------------------------------------------------
def test_token_times_come_from_the_applications_clock(
    app: Flask, rp: RelyingParty, user: CreatedUser, clock: FrozenClock
) -> None:
    """OIDC Core 2 (``iat``, ``exp``, ``auth_time``) and RFC 9068 2.2 (``iat``, ``exp``): one
    time per token response, the application's clock (idp.clock), the same the token's record,
    its expiry checks and the sign-in's ``auth_time`` read; the ID and access tokens' ``iat``
    and ``exp`` came from the system clock instead."""
    clock.set(utcnow() - timedelta(hours=1))
    at = int(clock.now().timestamp())
    tokens = rp.tokens_for(user)
    id_claims = jwt_parts(tokens["id_token"])[1]
    access_claims = jwt_parts(tokens["access_token"])[1]
    ttl = app.extensions["idp"].settings.id_token_ttl
    assert (id_claims["auth_time"], id_claims["iat"], id_claims["exp"]) == (at, at, at + ttl)
    assert (access_claims["iat"], access_claims["exp"]) == (at, at + tokens["expires_in"])
    with app.app_context():
        expires_at = db.session.scalars(select(AccessToken.expires_at)).one()
    assert int(expires_at.timestamp()) == access_claims["exp"]


def test_id_token_carries_every_required_claim(
    app: Flask, client: FlaskClient, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    claims = dict(
        jwt.decode(tokens["id_token"], published_keys(client), algorithms=["RS256"]).claims
    )
    now = int(time.time())
    assert claims["iss"] == ISSUER
    assert claims["sub"] == user.id
    assert claims["aud"] == rp.registered.client_id
    assert now - 5 <= claims["iat"] <= now
    assert claims["exp"] > claims["iat"]
    assert claims["iat"] - 5 <= claims["auth_time"] <= claims["iat"]
    assert claims["nonce"] == rp.nonce
    assert claims["at_hash"] == half_hash(tokens["access_token"])
    assert claims["amr"] == ["pwd"]
    assert claims["acr"] == "urn:idp:acr:password"
    with app.app_context():
        assert claims["sid"] == db.session.scalars(select(BrowserSession.sid)).one()


def test_id_token_has_no_nonce_when_none_was_sent(rp: RelyingParty, user: CreatedUser) -> None:
    claims = jwt_parts(rp.tokens_for(user, nonce=None)["id_token"])[1]
    assert "nonce" not in claims


def test_refresh_does_not_change_the_subject_or_audience(
    rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """OIDC Core 12.2: a refreshed ID token keeps iss, sub and aud (and auth_time)."""
    refreshed = rp.refresh(tokens["refresh_token"]).get_json()
    if "id_token" in refreshed:
        before, after = jwt_parts(tokens["id_token"])[1], jwt_parts(refreshed["id_token"])[1]
        for name in ("iss", "sub", "aud", "auth_time"):
            assert after[name] == before[name]
    assert jwt_parts(refreshed["access_token"])[1]["sub"] == user.id


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_id_token_is_signed_with_the_clients_alg_and_a_published_key(
    app: Flask, client: FlaskClient, user: CreatedUser, alg: str
) -> None:
    rp = RelyingParty(client, create_client(app, id_token_alg=alg))
    id_token = rp.tokens_for(user)["id_token"]
    header = jwt_parts(id_token)[0]
    assert header["alg"] == alg
    assert header["kid"] in {key["kid"] for key in client.get("/jwks").get_json()["keys"]}
    jwt.decode(id_token, published_keys(client), algorithms=[alg])


def test_no_token_is_unsigned(client: FlaskClient, tokens: dict[str, Any]) -> None:
    for token in (tokens["id_token"], tokens["access_token"]):
        header = jwt_parts(token)[0]
        assert header["alg"].lower() != "none"
        assert token.split(".")[2]
    metadata = client.get("/.well-known/openid-configuration").get_json()
    for name, value in metadata.items():
        if name.endswith("alg_values_supported"):
            assert "none" not in [v.lower() for v in value], name


def test_jwks_publishes_only_public_keys(client: FlaskClient) -> None:
    keys = client.get("/jwks").get_json()["keys"]
    assert keys
    for key in keys:
        assert key["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key), key["kid"]


# -- the access token (RFC 9068) ------------------------------------------------------------------
def test_access_token_is_a_verifiable_at_jwt(
    client: FlaskClient, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    header, _ = jwt_parts(tokens["access_token"])
    assert header["typ"] == "at+jwt"
    claims = dict(
        jwt.decode(
            tokens["access_token"], published_keys(client), algorithms=[header["alg"]]
        ).claims
    )
    assert claims["iss"] == ISSUER
    assert claims["sub"] == user.id
    assert claims["client_id"] == rp.registered.client_id
    assert claims["aud"]
    assert claims["jti"]
    assert claims["exp"] > claims["iat"]
    assert claims["scope"] == "openid profile email offline_access"


def test_access_tokens_have_unique_jti(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    refreshed = rp.refresh(tokens["refresh_token"]).get_json()
    first = jwt_parts(tokens["access_token"])[1]["jti"]
    assert jwt_parts(refreshed["access_token"])[1]["jti"] != first


# -- UserInfo (OIDC Core 5.3, RFC 6750 2) ---------------------------------------------------------
def test_userinfo_get_with_bearer_header(
    rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    response = rp.userinfo(tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["sub"] == user.id


def test_userinfo_post_with_form_body_token(
    rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    response = rp.browser.post("/userinfo", data={"access_token": tokens["access_token"]})
    assert response.status_code == 200, response.text
    assert response.get_json()["sub"] == user.id


def test_userinfo_refuses_a_token_sent_two_ways(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    """RFC 6750 2 and 3.1: one method per request; two are invalid_request (400)."""
    token = tokens["access_token"]
    response = rp.browser.post("/userinfo", data={"access_token": token},
                               headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("query", ["", "?access_token=other"])
def test_userinfo_refuses_a_token_sent_twice(
    rp: RelyingParty, tokens: dict[str, Any], query: str
) -> None:
    """RFC 6749 3.2 and RFC 6750 2.2: no parameter more than once, in the body or once in the
    body and once in the query; the first value was read. 400 invalid_request with the Bearer
    challenge, as the token endpoint refuses a repeated parameter."""
    token = tokens["access_token"]
    body = f"access_token={token}" + ("&access_token=other" if not query else "")
    response = rp.browser.post(f"/userinfo{query}", data=body,
                               content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize("method", ["POST", "HEAD"])
def test_a_userinfo_request_refused_before_the_endpoint_carries_the_bearer_challenge(
    client: FlaskClient, method: str
) -> None:
    """RFC 6750 3 (OIDC Core 5.3.3): every refusal of the UserInfo endpoint carries the Bearer
    challenge, one refused before the endpoint read it (a NUL in a parameter) too, whether the
    direct endpoint (GET, POST) or Flask (HEAD) refused it; it was a 400 without one."""
    response = client.open(
        "/userinfo?access_token=%00", method=method, data="access_token=%00",
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert response.status_code == 400
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="idp", error="invalid_request", DPoP algs="'
    )
    assert response.mimetype == "application/json"
    if method == "POST":
        assert response.get_json()["error"] == "invalid_request"


def test_userinfo_post_with_bearer_header(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert rp.browser.post("/userinfo", headers=headers).status_code == 200


def test_userinfo_without_token_is_401_with_a_bare_bearer_challenge(client: FlaskClient) -> None:
    """RFC 6750 3.1: with no credentials at all, the challenge carries no error code."""
    assert bearer_error(client.get("/userinfo")) is None


def test_userinfo_ignores_a_token_in_the_query(client: FlaskClient, tokens: dict[str, Any]) -> None:
    """RFC 9700 2.4 / RFC 6750 5.3: bearer tokens are not accepted in URLs."""
    response = client.get("/userinfo", query_string={"access_token": tokens["access_token"]})
    assert bearer_error(response) is None


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 9000])
def test_userinfo_with_a_garbage_token_is_invalid_token(rp: RelyingParty, token: str) -> None:
    assert bearer_error(rp.userinfo(token)) == "invalid_token"


def test_userinfo_with_an_alg_none_token_is_invalid_token(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    header, claims = jwt_parts(tokens["access_token"])
    forged = compact({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, claims, "")
    assert bearer_error(rp.userinfo(forged)) == "invalid_token"


def test_userinfo_with_tampered_claims_is_invalid_token(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    other = create_user(app, email="grace@example.com")
    header, claims = jwt_parts(tokens["access_token"])
    signature = tokens["access_token"].rsplit(".", 1)[1]
    tampered = compact(header, {**claims, "sub": other.id}, signature)
    assert bearer_error(rp.userinfo(tampered)) == "invalid_token"


def test_userinfo_with_an_hmac_token_keyed_by_the_public_key_is_invalid_token(
    client: FlaskClient, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RFC 8725 2.1: algorithm confusion (HS256 keyed with the published public key)."""
    header, claims = jwt_parts(tokens["access_token"])
    public = next(k for k in client.get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
    forged_header = {"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}
    signing_input = compact(forged_header, claims, "").rstrip(".")
    mac = hmac.new(json.dumps(public).encode(), signing_input.encode(), hashlib.sha256)
    forged = f"{signing_input}.{b64(mac.digest())}"
    assert bearer_error(rp.userinfo(forged)) == "invalid_token"


def test_userinfo_with_an_id_token_is_invalid_token(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RFC 9068 4: only a token typed at+jwt is an access token."""
    assert bearer_error(rp.userinfo(tokens["id_token"])) == "invalid_token"


def test_userinfo_with_an_expired_token_is_invalid_token(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    with app.app_context():
        db.session.execute(update(AccessToken).values(expires_at=utcnow()))
        db.session.commit()
    assert bearer_error(rp.userinfo(tokens["access_token"])) == "invalid_token"


def test_userinfo_with_a_client_credentials_token_is_invalid_token(rp: RelyingParty) -> None:
    access_token = rp.token({"grant_type": "client_credentials"}).get_json()["access_token"]
    assert bearer_error(rp.userinfo(access_token)) == "invalid_token"


def test_userinfo_without_openid_scope_is_insufficient_scope(
    rp: RelyingParty, user: CreatedUser
) -> None:
    access_token = rp.tokens_for(user, scope="profile")["access_token"]
    response = rp.userinfo(access_token)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("scope", "claims"),
    [
        ("openid", {"sub"}),
        # preferred_username is the email address: released with email only (the consent).
        ("openid profile", {"sub", "name"}),
        ("openid email", {"sub", "email", "email_verified"}),
        (
            "openid profile email",
            {"sub", "name", "preferred_username", "email", "email_verified"},
        ),
    ],
)
def test_userinfo_releases_the_claims_of_the_granted_scopes(
    rp: RelyingParty, user: CreatedUser, scope: str, claims: set[str]
) -> None:
    access_token = rp.tokens_for(user, scope=scope)["access_token"]
    info = rp.userinfo(access_token).get_json()
    assert set(info) == claims
    assert info["sub"] == user.id


def test_a_user_without_a_name_gets_no_empty_name_claim(
    app: Flask, client: FlaskClient, rp: RelyingParty
) -> None:
    """OIDC Core 5.3.2: a claim idp has no value for is omitted, not "present with a null or empty
    string value" (the name is optional at sign-up): with ``profile`` granted, neither the ID
    token nor userinfo carries ``"name": ""``, which a relying party would show instead of falling
    back to another claim."""
    nameless = create_user(app, email="nameless@example.com", name="")
    tokens = rp.tokens_for(nameless, scope="openid profile email")
    id_claims = jwt.decode(tokens["id_token"], published_keys(client), algorithms=["RS256"]).claims
    info = rp.userinfo(tokens["access_token"]).get_json()
    for claims in (id_claims, info):
        assert "name" not in claims
        assert claims["preferred_username"] == claims["email"] == "nameless@example.com"


# -- revocation (RFC 7009) ------------------------------------------------------------------------
def test_revoked_access_token_fails_at_userinfo_and_introspects_inactive(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = revoke(rp, tokens["access_token"], token_type_hint="access_token")
    assert response.status_code == 200, response.text
    assert bearer_error(rp.userinfo(tokens["access_token"])) == "invalid_token"
    assert introspect(rp, tokens["access_token"]) == {"active": False}


def test_revoking_an_access_token_keeps_the_refresh_token(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    revoke(rp, tokens["access_token"])
    assert rp.refresh(tokens["refresh_token"]).status_code == 200


def test_revoking_the_refresh_token_revokes_the_family(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = revoke(rp, tokens["refresh_token"], token_type_hint="refresh_token")
    assert response.status_code == 200, response.text
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.get_json()["error"] == "invalid_grant"
    assert bearer_error(rp.userinfo(tokens["access_token"])) == "invalid_token"
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}


def test_revoking_an_unknown_token_is_200(rp: RelyingParty) -> None:
    """RFC 7009 2.2: invalid tokens do not cause an error response."""
    response = revoke(rp, "not-a-token-we-issued")
    assert response.status_code == 200
    assert response.get_json() == {}


def test_an_unknown_token_type_hint_is_ignored_not_an_authentication_failure(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RFC 7009 2.1 and RFC 7662 2.1: the hint only speeds the search up, and the server MAY
    ignore it. A hint naming no token type idp issues (``id_token``, a vendor's) was answered 401
    ``unsupported_token_type`` to a client that had authenticated, which RFC 6749 5.2 keeps for
    ``invalid_client``: the client would take its credentials for wrong. The token is found as
    without a hint."""
    info = introspect(rp, tokens["refresh_token"], token_type_hint="id_token")
    assert info["active"] is True
    response = revoke(rp, tokens["refresh_token"], token_type_hint="id_token")
    assert response.status_code == 200, response.text
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}


def test_revocation_needs_client_authentication(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    response = rp.browser.post("/revoke", data={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    assert rp.userinfo(tokens["access_token"]).status_code == 200


def test_another_client_cannot_revoke_my_token(
    app: Flask, client: FlaskClient, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    other = RelyingParty(client, create_client(app, name="Other"))
    response = revoke(other, tokens["access_token"])
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"
    assert rp.userinfo(tokens["access_token"]).status_code == 200


# -- introspection (RFC 7662) ---------------------------------------------------------------------
def test_introspection_of_an_active_access_token(
    rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    info = introspect(rp, tokens["access_token"])
    assert info["active"] is True
    assert info["sub"] == user.id
    assert info["client_id"] == rp.registered.client_id
    assert info["iss"] == ISSUER
    assert info["scope"] == "openid profile email offline_access"
    assert info["exp"] > info["iat"]


def test_introspection_names_an_access_token_bearer_and_a_refresh_token_no_type(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RFC 7662 2.2: ``token_type`` is RFC 6749 5.1's, the type the token response named; a
    resource server that checks for "Bearer" refuses a refresh token presented in its place."""
    assert introspect(rp, tokens["access_token"])["token_type"] == tokens["token_type"] == "Bearer"
    info = introspect(rp, tokens["refresh_token"], token_type_hint="refresh_token")
    assert info["active"] is True
    assert "token_type" not in info


def test_a_refresh_token_introspects_inactive_once_the_app_clock_passes_its_expiry(
    rp: RelyingParty, tokens: dict[str, Any], clock: FrozenClock
) -> None:
    """Authlib asks the token itself whether it has expired (RFC 7662 2.2): on the app's clock."""
    info = introspect(rp, tokens["refresh_token"], token_type_hint="refresh_token")
    assert info["active"] is True
    clock.set(datetime.fromtimestamp(info["exp"], UTC) - timedelta(seconds=1))
    assert introspect(rp, tokens["refresh_token"])["active"] is True
    clock.advance(timedelta(seconds=2))
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}


def test_introspection_by_another_client_is_inactive(
    app: Flask, client: FlaskClient, tokens: dict[str, Any]
) -> None:
    other = RelyingParty(client, create_client(app, name="Other"))
    assert introspect(other, tokens["access_token"]) == {"active": False}
    assert introspect(other, tokens["refresh_token"]) == {"active": False}


def test_introspection_of_an_unknown_token_is_inactive(rp: RelyingParty) -> None:
    assert introspect(rp, "not-a-token-we-issued") == {"active": False}


def test_introspection_of_a_spent_refresh_token_is_inactive(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    rp.refresh(tokens["refresh_token"])
    assert introspect(rp, tokens["refresh_token"]) == {"active": False}


def test_introspection_needs_client_authentication(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = rp.browser.post("/introspect", data={"token": tokens["access_token"]})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"


# -- discovery (OIDC Discovery 3, 4) --------------------------------------------------------------
def test_discovery_document_validates_as_rfc_8414_and_oidc_discovery(client: FlaskClient) -> None:
    """Authlib's validator of OpenID Connect Discovery 1.0 3 and RFC 8414 2 (which makes an
    endpoint's signing algorithms mandatory beside private_key_jwt) accepts the document."""
    from authlib.oidc.discovery import OpenIDProviderMetadata

    metadata = client.get("/.well-known/openid-configuration").get_json()
    validator = OpenIDProviderMetadata(metadata)
    validator.validate()
    # Not among validate()'s own checks: RFC 8414 2's rule for the other endpoints.
    validator.validate_revocation_endpoint_auth_signing_alg_values_supported()
    validator.validate_introspection_endpoint_auth_signing_alg_values_supported()


def test_discovery_document_values(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["issuer"] == ISSUER
    assert metadata["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert metadata["token_endpoint"] == f"{ISSUER}/token"
    assert metadata["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert metadata["jwks_uri"] == f"{ISSUER}/jwks"
    assert metadata["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert metadata["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert metadata["end_session_endpoint"] == f"{ISSUER}/logout"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["response_modes_supported"] == ["query", "form_post"]
    assert metadata["request_parameter_supported"] is False
    assert metadata["request_uri_parameter_supported"] is False
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256", "ES256", "EdDSA"]
    assert metadata["acr_values_supported"] == [
        "urn:idp:acr:password",
        "urn:idp:acr:mfa",
        "phr",
        "phrh",
    ]
    assert metadata["subject_types_supported"] == ["public", "pairwise"]
    assert "openid" in metadata["scopes_supported"]
    assert "implicit" not in metadata["grant_types_supported"]


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("authorization_endpoint", "GET"),
        ("token_endpoint", "POST"),
        ("userinfo_endpoint", "GET"),
        ("jwks_uri", "GET"),
        ("revocation_endpoint", "POST"),
        ("introspection_endpoint", "POST"),
        ("end_session_endpoint", "GET"),
    ],
)
def test_every_advertised_endpoint_answers(client: FlaskClient, name: str, method: str) -> None:
    url = client.get("/.well-known/openid-configuration").get_json()[name]
    assert url.startswith(ISSUER + "/")
    response = client.open(url.removeprefix(ISSUER), method=method)
    assert response.status_code not in (404, 405, 500), (name, response.status_code)


def test_id_token_kid_names_the_key_that_signed_it_during_a_rotation(
    app: Flask, client: FlaskClient, user: CreatedUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation landing between Authlib's header and private-key look-ups (another node
    rotates, this worker reloads) must not publish a kid for a key that did not sign."""
    keys = app.extensions["idp"].keys
    real_lookup = keys.signing_key
    lookups = 0

    def rotating_lookup(session: Any, alg: str) -> Any:
        nonlocal lookups
        lookups += alg == "RS256"
        if alg == "RS256" and lookups == 2:
            keys.rotate(session, ("RS256",))
            keys.invalidate()
        return real_lookup(session, alg)

    monkeypatch.setattr(keys, "signing_key", rotating_lookup)
    id_token = RelyingParty(client, create_client(app)).tokens_for(user)["id_token"]
    monkeypatch.undo()
    header = jwt_parts(id_token)[0]
    signer = next(k for k in client.get("/jwks").get_json()["keys"] if k["kid"] == header["kid"])
    jwt.decode(id_token, KeySet.import_key_set({"keys": [signer]}), algorithms=["RS256"])


def test_a_single_page_app_can_call_the_token_and_userinfo_endpoints(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """OIDC Core 5.3: UserInfo SHOULD support CORS; a public single-page app exchanges its code,
    refreshes and revokes from its page too. The preflight for the Authorization header, then
    answers any origin may read (no cookie is read there, no credentials allowed)."""
    origin = {"Origin": "https://spa.example"}
    for path in ("/userinfo", "/token", "/revoke"):
        preflight = rp.browser.options(path, headers={
            **origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        })  # fmt: skip
        assert preflight.status_code == 204, path
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in preflight.headers
    bearer = {**origin, "Authorization": f"Bearer {tokens['access_token']}"}
    answered = rp.browser.get("/userinfo", headers=bearer)
    assert answered.status_code == 200
    assert answered.headers["Access-Control-Allow-Origin"] == "*"
    refused = rp.browser.get("/userinfo", headers={**origin, "Authorization": "Bearer nope"})
    assert refused.headers["Access-Control-Expose-Headers"] == "WWW-Authenticate"
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.headers["Access-Control-Allow-Origin"] == "*"
    # Not introspection: a resource server's call, with its own credentials.
    assert "Access-Control-Allow-Origin" not in rp.browser.options("/introspect").headers


def test_a_single_page_apps_request_refused_before_the_endpoint_is_readable_by_its_page(
    client: FlaskClient,
) -> None:
    """A request the token, revocation, userinfo or PAR endpoint refuses before reading it (a NUL in
    a parameter) answers a page's script with the same CORS headers as any of their answers:
    without them the browser hid the JSON ``invalid_request`` from the page, which saw only a
    failed fetch. Introspection, no page's call, answers without them."""
    headers = {"Origin": "https://spa.example"}
    for path in ("/token", "/revoke", "/par", "/userinfo"):
        response = client.post(path, data="grant_type=%00", headers=headers,
                               content_type="application/x-www-form-urlencoded")  # fmt: skip
        assert response.status_code == 400, path
        assert response.get_json()["error"] == "invalid_request", path
        assert response.headers["Access-Control-Allow-Origin"] == "*", path
    assert response.headers["Access-Control-Expose-Headers"] == "WWW-Authenticate"
    introspection = client.post("/introspect", data="token=%00", headers=headers,
                                content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert introspection.status_code == 400
    assert "Access-Control-Allow-Origin" not in introspection.headers
