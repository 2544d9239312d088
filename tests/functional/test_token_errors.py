"""The token endpoint's refusals (RFC 6749 5.2, RFC 7636, RFC 7523, RFC 9700): one named test per
rule, asserting the exact error code and status."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey
from sqlalchemy import select, update
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp import create_app
from idp.extensions import db
from idp.models import AuthorizationCode, Base, UsedClientAssertion
from idp.models.base import utcnow
from idp.oidc.client_auth import PrivateKeyJWT
from idp.services.retention import ASSERTION_REPLAY_EVIDENCE, RetentionPolicy, prune
from tests.conftest import app_overrides
from tests.functional.test_logout import introspect
from tests.support.clock import FrozenClock
from tests.support.factories import (
    REDIRECT_URI,
    CreatedUser,
    RegisteredClient,
    create_client,
    create_user,
    rows,
)
from tests.support.flow import RelyingParty, client_assertion, jwt_parts

#: The audience draft-ietf-oauth-rfc7523bis 4 requires of a client assertion: the issuer alone.
ISSUER = "http://localhost"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def error_of(response: TestResponse, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert "access_token" not in body
    error: str = body["error"]
    return error


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.fixture
def other_rp(app: Flask, client: FlaskClient) -> RelyingParty:
    return RelyingParty(client, create_client(app, name="Other"))


# -- authorization codes (RFC 6749 4.1.2, 4.1.3; RFC 9700 4.2) ------------------------------------
def test_code_reuse_is_invalid_grant_and_revokes_the_first_tokens(
    rp: RelyingParty, user: CreatedUser
) -> None:
    code = rp.obtain_code(user)["code"]
    first = rp.exchange(code)
    assert first.status_code == 200, first.text
    tokens = first.get_json()

    assert error_of(rp.exchange(code)) == "invalid_grant"
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert error_of(rp.refresh(tokens["refresh_token"])) == "invalid_grant"


def test_code_is_bound_to_its_client(
    rp: RelyingParty, other_rp: RelyingParty, user: CreatedUser
) -> None:
    code = rp.obtain_code(user)["code"]
    other_rp.verifier = rp.verifier
    assert error_of(other_rp.exchange(code)) == "invalid_grant"


def test_a_code_presented_by_another_client_spends_nothing(
    rp: RelyingParty, other_rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 6749 4.1.3: the code is refused to a client it was not issued to; the spend's
    conditional UPDATE names the client, so the code stays the right client's (and nothing is
    revoked as a replay)."""
    code = rp.obtain_code(user)["code"]
    other_rp.verifier = rp.verifier
    assert error_of(other_rp.exchange(code)) == "invalid_grant"
    redeemed = rp.exchange(code)
    assert redeemed.status_code == 200, redeemed.text
    assert rp.userinfo(redeemed.get_json()["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "redirect_uri",
    [
        pytest.param("https://rp.example/second", id="other-registered"),
        pytest.param(REDIRECT_URI + "/", id="trailing-slash"),
    ],
)
def test_code_is_bound_to_its_redirect_uri(
    app: Flask, client: FlaskClient, user: CreatedUser, redirect_uri: str
) -> None:
    # A missing redirect_uri is invalid_request, before the code is spent:
    # test_missing_redirect_uri_is_invalid_request_and_spends_nothing.
    registered = create_client(app, redirect_uris=[REDIRECT_URI, "https://rp.example/second"])
    rp = RelyingParty(client, registered)
    code = rp.obtain_code(user)["code"]
    response = rp.exchange(code, redirect_uri=redirect_uri)
    assert error_of(response) == "invalid_grant"


def test_expired_code_is_invalid_grant(app: Flask, rp: RelyingParty, user: CreatedUser) -> None:
    code = rp.obtain_code(user)["code"]
    with app.app_context():
        db.session.execute(
            update(AuthorizationCode).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    assert error_of(rp.exchange(code)) == "invalid_grant"


def test_a_code_issued_by_a_clock_since_stepped_back_is_not_revived(
    app: Flask, clock: FrozenClock, rp: RelyingParty, user: CreatedUser
) -> None:
    """A code's expiry is read with its issue time (``expires_at - code_ttl``): a code issued
    when the clock ran an hour ahead, expired by that clock, does not live again for the hour
    after NTP steps the clock back (nor does one issued an hour "later" by a node whose clock is
    an hour ahead). A node a few seconds ahead (ordinary skew) issues codes that still work."""
    clock.advance(timedelta(hours=1))  # the clock ran ahead...
    code = rp.obtain_code(user)["code"]
    clock.advance(-timedelta(hours=1))  # ... and is stepped back
    assert error_of(rp.exchange(code)) == "invalid_grant"

    clock.advance(timedelta(seconds=5))
    slightly_ahead = rp.obtain_code(user)["code"]
    clock.advance(-timedelta(seconds=5))
    assert rp.exchange(slightly_ahead).status_code == 200


def test_code_lives_at_most_sixty_seconds(app: Flask, rp: RelyingParty, user: CreatedUser) -> None:
    rp.obtain_code(user)
    with app.app_context():
        stored = db.session.scalars(select(AuthorizationCode)).one()
        lifetime = stored.expires_at - utcnow()
    assert timedelta(0) < lifetime <= timedelta(seconds=60)


def test_unknown_code_is_invalid_grant(rp: RelyingParty) -> None:
    assert error_of(rp.exchange(secrets.token_urlsafe(32))) == "invalid_grant"


def test_missing_code_is_invalid_request(rp: RelyingParty) -> None:
    response = rp.token({"grant_type": "authorization_code", "redirect_uri": REDIRECT_URI})
    assert error_of(response) == "invalid_request"


# RFC 6749 3.2: a parameter sent without a value is treated as omitted.
@pytest.mark.parametrize("redirect_uri", [None, ""])
def test_missing_redirect_uri_is_invalid_request_and_spends_nothing(
    rp: RelyingParty, user: CreatedUser, redirect_uri: str | None
) -> None:
    """RFC 6749 4.1.3 and OIDC Core 3.1.3.1: ``redirect_uri`` is required at the token endpoint
    when the authorization request had one, which every request to idp has; a request missing a
    required parameter is ``invalid_request`` (RFC 6749 5.2), as a missing ``code`` is. It was
    ``invalid_grant`` after the code was spent, so the client's corrected request was a replay
    that revoked the grant. Refused before anything is spent, the code still works."""
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, redirect_uri=redirect_uri)) == "invalid_request"
    assert rp.exchange(code).status_code == 200


# -- PKCE at the token endpoint (RFC 7636 4.6, RFC 9700 4.8) --------------------------------------
def test_wrong_code_verifier_is_invalid_grant(rp: RelyingParty, user: CreatedUser) -> None:
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, code_verifier=secrets.token_urlsafe(48))) == "invalid_grant"


def test_wrong_code_verifier_spends_the_code(rp: RelyingParty, user: CreatedUser) -> None:
    code = rp.obtain_code(user)["code"]
    rp.exchange(code, code_verifier=secrets.token_urlsafe(48))
    assert error_of(rp.exchange(code)) == "invalid_grant"


def test_missing_code_verifier_is_invalid_request(rp: RelyingParty, user: CreatedUser) -> None:
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, code_verifier=None)) == "invalid_request"


def test_public_client_without_code_verifier_is_invalid_request(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    rp = RelyingParty(client, create_client(app, public=True))
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, code_verifier=None)) == "invalid_request"


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "+"])
def test_malformed_code_verifier_is_invalid_request(
    rp: RelyingParty, user: CreatedUser, verifier: str
) -> None:
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, code_verifier=verifier)) == "invalid_request"


@pytest.mark.parametrize(
    ("public", "verifier"), [(True, None), (True, ""), (False, "short"), (False, "a" * 43 + "\n")]
)
def test_a_verifier_missing_from_a_public_client_or_malformed_spends_nothing(
    app: Flask, client: FlaskClient, user: CreatedUser, public: bool, verifier: str | None
) -> None:
    """RFC 7636 4.5 and RFC 6749 5.2: a malformed ``code_verifier``, or none from a public
    client (whose codes always carry a challenge: RFC 9700 2.1.1), is ``invalid_request`` whatever
    the code holds, so it is refused before the code is spent, as a missing ``code`` or
    ``redirect_uri`` is; the code was spent first, and the client's corrected request was a
    replay that revoked the grant. A wrong but well-formed verifier still spends the code
    (test_wrong_code_verifier_spends_the_code): guessing it must cost the code."""
    rp = RelyingParty(client, create_client(app, public=public))
    code = rp.obtain_code(user)["code"]
    assert error_of(rp.exchange(code, code_verifier=verifier)) == "invalid_request"
    assert rp.exchange(code).status_code == 200


@pytest.fixture
def pkce_for_public_only(tmp_path: Path) -> Iterator[Flask]:
    """An app configured with pkce_required_for="public": confidential clients may skip PKCE."""
    flask_app = create_app(
        app_overrides(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path, pkce_required_for="public")
    )
    with flask_app.app_context():
        Base.metadata.create_all(db.engine)
        flask_app.extensions["idp"].keys.ensure_keys(db.session())
        db.session.commit()
    yield flask_app
    with flask_app.app_context():
        db.engine.dispose()


def test_code_verifier_without_challenge_is_invalid_request(pkce_for_public_only: Flask) -> None:
    """RFC 9700 4.8.2: a verifier for a code issued without a challenge is a downgrade attempt."""
    user = create_user(pkce_for_public_only)
    rp = RelyingParty(pkce_for_public_only.test_client(), create_client(pkce_for_public_only))
    code = rp.obtain_code(user, code_challenge=None, code_challenge_method=None)["code"]
    assert error_of(rp.exchange(code)) == "invalid_request"


def test_confidential_client_may_skip_pkce_when_configured(pkce_for_public_only: Flask) -> None:
    user = create_user(pkce_for_public_only)
    rp = RelyingParty(pkce_for_public_only.test_client(), create_client(pkce_for_public_only))
    code = rp.obtain_code(user, code_challenge=None, code_challenge_method=None)["code"]
    assert rp.exchange(code, code_verifier=None).status_code == 200


def test_public_client_still_needs_pkce_when_configured_for_public(
    pkce_for_public_only: Flask,
) -> None:
    registered = create_client(pkce_for_public_only, public=True)
    rp = RelyingParty(pkce_for_public_only.test_client(), registered)
    response = rp.authorize(code_challenge=None, code_challenge_method=None)
    assert response.status_code == 302
    assert "error=invalid_request" in response.headers["Location"]


# -- client authentication (RFC 6749 2.3, 3.2.1, 5.2) ---------------------------------------------
def test_wrong_client_secret_basic_is_401_invalid_client(
    rp: RelyingParty, user: CreatedUser
) -> None:
    code = rp.obtain_code(user)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": rp.verifier,
    }
    headers = basic(rp.registered.client_id, "wrong-secret")
    response = rp.browser.post("/token", data=data, headers=headers)
    assert error_of(response, 401) == "invalid_client"
    # RFC 6749 5.2: a failed Authorization header gets a challenge for the same scheme.
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_unknown_client_basic_is_401_invalid_client(rp: RelyingParty) -> None:
    data = {"grant_type": "client_credentials"}
    response = rp.browser.post("/token", data=data, headers=basic("no-such-client", "secret"))
    assert error_of(response, 401) == "invalid_client"


def test_wrong_client_secret_post_is_401_invalid_client(app: Flask, client: FlaskClient) -> None:
    registered = create_client(app, auth_method="client_secret_post")
    data = {
        "grant_type": "client_credentials",
        "client_id": registered.client_id,
        "client_secret": "wrong-secret",
    }
    assert error_of(client.post("/token", data=data), 401) == "invalid_client"


def test_client_authentication_failure_names_the_registered_method(
    app: Flask, client: FlaskClient
) -> None:
    """RFC 6749 5.2: the error_description names the one method the client is registered for
    (OIDC Core 9), not the list of every method the server tried."""
    registered = create_client(app, auth_method="client_secret_post")
    data = {"grant_type": "client_credentials"}
    credentials = basic(registered.client_id, registered.client_secret or "")
    response = client.post("/token", data=data, headers=credentials)
    assert error_of(response, 401) == "invalid_client"
    description = response.get_json()["error_description"]
    assert f"{registered.client_id} is registered for client_secret_post" in description
    assert "client_secret_basic" not in description
    unknown = client.post("/token", data=data, headers=basic("no-such-client", "secret"))
    assert "registered for" not in unknown.get_json()["error_description"]


def test_client_secret_post_client_succeeds_with_its_method(
    app: Flask, client: FlaskClient
) -> None:
    registered = create_client(app, auth_method="client_secret_post")
    data = {
        "grant_type": "client_credentials",
        "client_id": registered.client_id,
        "client_secret": registered.client_secret,
    }
    assert client.post("/token", data=data).status_code == 200


def test_client_must_use_its_registered_auth_method(app: Flask, client: FlaskClient) -> None:
    registered = create_client(app, auth_method="client_secret_post")
    assert registered.client_secret is not None
    headers = basic(registered.client_id, registered.client_secret)
    response = client.post("/token", data={"grant_type": "client_credentials"}, headers=headers)
    assert error_of(response, 401) == "invalid_client"


def test_confidential_client_without_authentication_is_invalid_client(
    rp: RelyingParty, user: CreatedUser
) -> None:
    """RFC 6749 3.2.1: a confidential client MUST authenticate; client_id alone is not enough."""
    code = rp.obtain_code(user)["code"]
    data = {
        "grant_type": "authorization_code",
        "client_id": rp.registered.client_id,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": rp.verifier,
    }
    assert error_of(rp.browser.post("/token", data=data), 401) == "invalid_client"


def test_public_client_sending_a_client_secret_is_invalid_client(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    rp = RelyingParty(client, create_client(app, public=True))
    code = rp.obtain_code(user)["code"]
    data = {
        "grant_type": "authorization_code",
        "client_id": rp.registered.client_id,
        "client_secret": "made-up",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": rp.verifier,
    }
    assert error_of(client.post("/token", data=data), 401) == "invalid_client"


# -- grant types ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "AUTHORIZATION_CODE",
    ],
)
def test_unsupported_grant_type(rp: RelyingParty, grant_type: str) -> None:
    assert error_of(rp.token({"grant_type": grant_type})) == "unsupported_grant_type"


# RFC 6749 3.2: a parameter sent without a value is treated as omitted.
@pytest.mark.parametrize("form", [{}, {"grant_type": ""}])
def test_missing_grant_type_is_invalid_request(rp: RelyingParty, form: dict[str, str]) -> None:
    """RFC 6749 5.2: a request "missing a required parameter" is ``invalid_request``;
    ``unsupported_grant_type`` is for a grant type the server does not support, and a request
    without ``grant_type`` (REQUIRED in 4.1.3, 4.4.2 and 6) names none."""
    assert error_of(rp.token(form)) == "invalid_request"


def test_grant_type_not_registered_for_the_client_is_unauthorized_client(
    app: Flask, client: FlaskClient
) -> None:
    rp = RelyingParty(client, create_client(app, grant_types=["authorization_code"]))
    assert error_of(rp.token({"grant_type": "client_credentials"})) == "unauthorized_client"


# -- refresh tokens (OIDC Core 11/12, RFC 6749 6, RFC 9700 4.14) ----------------------------------
def test_refresh_token_only_with_offline_access(rp: RelyingParty, user: CreatedUser) -> None:
    tokens = rp.tokens_for(user, scope="openid profile")
    assert "refresh_token" not in tokens


def test_no_refresh_token_for_a_client_without_the_refresh_grant(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    rp = RelyingParty(client, create_client(app, grant_types=["authorization_code"]))
    tokens = rp.tokens_for(user, scope="openid offline_access")
    assert "refresh_token" not in tokens
    assert "offline_access" not in tokens["scope"].split()


def test_refresh_token_is_rotated_on_every_use(rp: RelyingParty, user: CreatedUser) -> None:
    first = rp.tokens_for(user)["refresh_token"]
    second = rp.refresh(first).get_json()["refresh_token"]
    third = rp.refresh(second).get_json()["refresh_token"]
    assert len({first, second, third}) == 3


def test_refreshed_tokens_work(rp: RelyingParty, user: CreatedUser) -> None:
    refreshed = rp.refresh(rp.tokens_for(user)["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert rp.userinfo(refreshed.get_json()["access_token"]).status_code == 200


def test_spent_refresh_token_is_invalid_grant_and_revokes_the_family(
    rp: RelyingParty, user: CreatedUser
) -> None:
    original = rp.tokens_for(user)
    newer = rp.refresh(original["refresh_token"]).get_json()
    # The successor is used: presenting the original again is a replay, not a retry of a lost
    # answer (tests/functional/test_refresh_retry.py has the retry).
    newest = rp.refresh(newer["refresh_token"]).get_json()

    assert error_of(rp.refresh(original["refresh_token"])) == "invalid_grant"
    assert error_of(rp.refresh(newest["refresh_token"])) == "invalid_grant"
    assert rp.userinfo(newest["access_token"]).status_code == 401
    assert rp.userinfo(original["access_token"]).status_code == 401


def test_refresh_token_is_bound_to_its_client(
    rp: RelyingParty, other_rp: RelyingParty, user: CreatedUser
) -> None:
    refresh_token = rp.tokens_for(user)["refresh_token"]
    assert error_of(other_rp.refresh(refresh_token)) == "invalid_grant"
    # The attempt neither spent the token nor revoked the grant.
    assert rp.refresh(refresh_token).status_code == 200


def test_refresh_with_a_wider_scope_is_invalid_scope(rp: RelyingParty, user: CreatedUser) -> None:
    refresh_token = rp.tokens_for(user, scope="openid offline_access")["refresh_token"]
    assert error_of(rp.refresh(refresh_token, scope="openid email offline_access")) == (
        "invalid_scope"
    )


def test_unknown_refresh_token_is_invalid_grant(rp: RelyingParty) -> None:
    assert error_of(rp.refresh(secrets.token_urlsafe(32))) == "invalid_grant"


def test_missing_refresh_token_is_invalid_request(rp: RelyingParty) -> None:
    assert error_of(rp.token({"grant_type": "refresh_token"})) == "invalid_request"


# -- client credentials (RFC 6749 4.4) ------------------------------------------------------------
def test_client_credentials_for_a_confidential_client(rp: RelyingParty) -> None:
    response = rp.token({"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    # RFC 6749 4.4.3: a refresh token SHOULD NOT be included; there is no user, so no ID token.
    assert "refresh_token" not in tokens
    assert "id_token" not in tokens
    claims = jwt_parts(tokens["access_token"])[1]
    assert claims["sub"] == rp.registered.client_id
    assert claims["client_id"] == rp.registered.client_id


@pytest.mark.parametrize(
    ("base_url", "issued"),
    [
        ("https://id.example.com", True),
        ("http://127.0.0.1", True),
        ("http://id.example.com", False),
    ],
)
def test_tokens_are_issued_only_over_tls_or_loopback(
    rp: RelyingParty, base_url: str, issued: bool
) -> None:
    """RFC 6749 1.6 and 3.2: the token endpoint requires TLS (loopback excepted for development,
    RFC 8252 7.3). Authlib checks the transport on the request idp hands it
    (idp.oidc.token_request.TokenSideRequest, which gives it the scheme and host alone)."""
    secret = f"{rp.registered.client_id}:{rp.registered.client_secret}".encode()
    response = rp.browser.post(
        "/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(secret).decode()},
        base_url=base_url,
    )
    assert (response.status_code == 200) is issued, response.text
    assert ("access_token" in (response.get_json() or {})) is issued
    if not issued:
        # An OAuth error answer (RFC 6749 5.2), not a server error.
        assert response.status_code == 400
        assert response.get_json()["error"] == "insecure_transport"
        assert response.headers["Cache-Control"] == "no-store"


# RFC 6749 3.2: a parameter sent without a value is treated as omitted.
@pytest.mark.parametrize("form", [{}, {"scope": ""}])
def test_client_credentials_without_a_scope_answer_no_scope_member(
    rp: RelyingParty, form: dict[str, str]
) -> None:
    """RFC 6749 3.3: a scope is one or more scope tokens, so "" is none; RFC 6749 5.1 makes the
    member optional (the issued scope is the requested one: none), RFC 9068 2.2.3 asks for the
    claim only when the request had a scope, and RFC 7662 2.2 makes it optional at
    introspection. The member is left out of the answer, the access token and introspection."""
    response = rp.token({"grant_type": "client_credentials", **form})
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert "scope" not in tokens
    assert "scope" not in jwt_parts(tokens["access_token"])[1]
    assert "scope" not in introspect(rp, tokens["access_token"])


def test_client_credentials_with_a_scope_of_spaces_only_is_invalid_scope(rp: RelyingParty) -> None:
    """RFC 6749 3.3: a scope is scope tokens separated by single spaces; spaces alone are a
    malformed scope (5.2 ``invalid_scope``), which was issued verbatim as the token's scope."""
    assert (
        error_of(rp.token({"grant_type": "client_credentials", "scope": "  "})) == "invalid_scope"
    )


def test_client_credentials_ignores_offline_access(rp: RelyingParty) -> None:
    response = rp.token({"grant_type": "client_credentials", "scope": "offline_access"})
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.get_json()


def test_client_credentials_grants_a_registered_scope(rp: RelyingParty) -> None:
    response = rp.token({"grant_type": "client_credentials", "scope": "profile"})
    assert response.status_code == 200, response.text
    assert jwt_parts(response.get_json()["access_token"])[1]["scope"] == "profile"


@pytest.mark.parametrize(
    ("requested", "issued"),
    [("profile  profile\topenid", "profile openid"), (" ".join(["profile"] * 300), "profile")],
)
def test_client_credentials_issue_each_scope_once_in_single_spaces(
    storage_app: Flask, requested: str, issued: str
) -> None:
    """RFC 6749 3.3: a scope is scope tokens separated by single spaces (RFC 9068 2.2.3, RFC 8693
    4.2 for the claim). Client credentials issued the requested string verbatim, repeated tokens,
    tabs and runs of spaces included, into the answer, the access token and its record, where a
    long one was a 500 on PostgreSQL (the record's column is as wide as the longest scope a
    client may be allowed). The scope issued is the one every other grant issues: the client's
    allowed scopes as requested, each once (the client's ``get_allowed_scope``)."""
    rp = RelyingParty(storage_app.test_client(), create_client(storage_app))
    response = rp.token({"grant_type": "client_credentials", "scope": requested})
    assert response.status_code == 200, response.text
    tokens = response.get_json()
    assert tokens["scope"] == issued
    assert jwt_parts(tokens["access_token"])[1]["scope"] == issued
    assert introspect(rp, tokens["access_token"])["scope"] == issued


@pytest.mark.parametrize("scope", ["admin", "profile admin", "." * 2000])
def test_client_credentials_with_an_unregistered_scope_is_invalid_scope(
    rp: RelyingParty, scope: str
) -> None:
    """RFC 6749 3.3: a client is never granted a scope it is not registered for."""
    response = rp.token({"grant_type": "client_credentials", "scope": scope})
    assert error_of(response) == "invalid_scope"


def test_public_client_cannot_use_client_credentials(app: Flask, client: FlaskClient) -> None:
    rp = RelyingParty(client, create_client(app, public=True))
    assert error_of(rp.token({"grant_type": "client_credentials"}), 401) == "invalid_client"


# -- private_key_jwt (RFC 7523 2.2, 3; OIDC Core 9) -----------------------------------------------
@pytest.fixture(scope="module")
def rp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rp-key-1"})


@pytest.fixture
def jwt_client(app: Flask, rp_key: RSAKey) -> RegisteredClient:
    jwks = {"keys": [rp_key.as_dict(private=False)]}
    return create_client(app, auth_method="private_key_jwt", jwks=jwks)


def assertion(client_id: str, key: Any, alg: str = "RS256", **overrides: Any) -> str:
    return client_assertion(client_id, key, ISSUER, alg, **overrides)


def assertion_request(value: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": value,
        **extra,
    }


def test_private_key_jwt_authenticates_the_client(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey
) -> None:
    response = client.post(
        "/token", data=assertion_request(assertion(jwt_client.client_id, rp_key))
    )
    assert response.status_code == 200, response.text
    assert jwt_parts(response.get_json()["access_token"])[1]["sub"] == jwt_client.client_id


@pytest.mark.parametrize(
    ("alg", "new_key"),
    [
        ("RS256", lambda: RSAKey.generate_key(2048, parameters={"kid": "rp-rsa"})),
        ("ES256", lambda: ECKey.generate_key("P-256", parameters={"kid": "rp-ec"})),
        ("EdDSA", lambda: OKPKey.generate_key("Ed25519", parameters={"kid": "rp-okp"})),
    ],
)
def test_every_advertised_assertion_alg_authenticates_a_client(
    app: Flask, client: FlaskClient, alg: str, new_key: Any
) -> None:
    """OIDC Discovery 1.0 3: token_endpoint_auth_signing_alg_values_supported lists what the
    token endpoint accepts; an EdDSA assertion was refused (joserfc's default algorithms)."""
    advertised = client.get("/.well-known/openid-configuration").get_json()
    assert alg in advertised["token_endpoint_auth_signing_alg_values_supported"]
    key = new_key()
    registered = create_client(
        app, auth_method="private_key_jwt", jwks={"keys": [key.as_dict(private=False)]}
    )
    signed = assertion(registered.client_id, key, alg)
    response = client.post("/token", data=assertion_request(signed))
    assert response.status_code == 200, response.text


def test_a_basic_invalid_client_challenge_names_its_realm(client: FlaskClient) -> None:
    """RFC 6749 5.2: 401 with a challenge of the scheme the client used; RFC 7617 2: a Basic
    challenge's realm is REQUIRED."""
    header = "Basic " + base64.b64encode(b"no-such-client:secret").decode()
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": header})  # fmt: skip
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith(
        'Basic realm="idp", error="invalid_client"'
    )


def test_private_key_jwt_redeems_a_code(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey, user: CreatedUser
) -> None:
    rp = RelyingParty(client, jwt_client)
    code = rp.obtain_code(user)["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": rp.verifier,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(jwt_client.client_id, rp_key),
    }
    response = client.post("/token", data=data)
    assert response.status_code == 200, response.text
    assert "id_token" in response.get_json()


def test_replayed_client_assertion_is_invalid_client(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey
) -> None:
    value = assertion(jwt_client.client_id, rp_key)
    assert client.post("/token", data=assertion_request(value)).status_code == 200
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


def test_client_assertion_signed_with_another_key_is_invalid_client(
    client: FlaskClient, jwt_client: RegisteredClient
) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rp-key-1"})
    value = assertion(jwt_client.client_id, impostor)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


def _unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'rp-key-1'})}.{part(claims)}."


def test_client_assertion_with_alg_none_is_invalid_client(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey
) -> None:
    claims = jwt_parts(assertion(jwt_client.client_id, rp_key))[1]
    value = _unsigned(claims)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": "https://elsewhere.example/token"}, id="wrong-audience"),
        pytest.param({"exp": int(time.time()) - 600}, id="expired"),
        pytest.param({"iss": "someone-else"}, id="iss-not-sub"),
        pytest.param({"jti": None}, id="no-jti"),
    ],
)
def test_client_assertion_with_bad_claims_is_invalid_client(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey, overrides: dict[str, Any]
) -> None:
    claims = {k: v for k, v in overrides.items() if v is not None}
    value = assertion(jwt_client.client_id, rp_key, **claims)
    if overrides.get("jti", "") is None:
        header, payload = jwt_parts(value)
        del payload["jti"]
        value = jwt.encode(header, payload, rp_key)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


def test_client_secret_client_cannot_use_private_key_jwt(
    app: Flask, client: FlaskClient, rp_key: RSAKey
) -> None:
    registered = create_client(app)  # client_secret_basic
    value = assertion(registered.client_id, rp_key)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"exp": time.time() + 60}, id="exp-float"),
        pytest.param({"exp": str(int(time.time()) + 60)}, id="exp-string"),
        pytest.param({"exp": True}, id="exp-boolean"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": time.time()}, id="iat-float"),
        pytest.param({"iat": "now"}, id="iat-string"),
        pytest.param({"nbf": float(int(time.time()))}, id="nbf-float"),
    ],
)
def test_client_assertion_time_claims_must_be_integers(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey, overrides: dict[str, Any]
) -> None:
    """RFC 7519 2 NumericDate, RFC 7523 3: idp keeps a replay record per jti until the
    assertion's expiry, which must be an integer it can store and compare."""
    value = assertion(jwt_client.client_id, rp_key)
    header, claims = jwt_parts(value)
    for name, claim in overrides.items():
        if claim is None:
            claims.pop(name)
        else:
            claims[name] = claim
    value = jwt.encode(header, claims, rp_key)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


@pytest.mark.parametrize(
    "lifetime",
    [
        pytest.param({"iat": 0, "exp": 3601}, id="issued-for-over-an-hour"),
        pytest.param({"iat": None, "exp": 3700}, id="no-iat-expires-in-over-an-hour"),
        pytest.param({"iat": 7200, "exp": 7260}, id="iat-in-the-future"),
        pytest.param({"iat": -86400, "exp": 86400}, id="a-day-each-way"),
    ],
)
def test_client_assertion_valid_for_more_than_an_hour_is_invalid_client(
    client: FlaskClient, jwt_client: RegisteredClient, rp_key: RSAKey, lifetime: dict[str, Any]
) -> None:
    """RFC 7523 3 lets the server bound how long it remembers a jti; OIDC Core 9 assertions are
    short-lived. Longer than an hour (from iat, or from now) is refused; an hour is what Authlib's
    client signs by default (tests/interop/test_authlib_client.py uses that default)."""
    now = int(time.time())
    value = assertion(jwt_client.client_id, rp_key, exp=now + lifetime["exp"])
    header, claims = jwt_parts(value)
    if lifetime["iat"] is None:
        claims.pop("iat")
    else:
        claims["iat"] = now + lifetime["iat"]
    value = jwt.encode(header, claims, rp_key)
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"
    # An hour exactly is fine.
    fine = assertion(jwt_client.client_id, rp_key, iat=now, exp=now + 3600)
    assert client.post("/token", data=assertion_request(fine)).status_code == 200


def test_client_assertion_replay_record_lives_until_the_assertion_expires(
    storage_app: Flask, rp_key: RSAKey
) -> None:
    """RFC 7523 3 "jti": the record that refuses a replay outlives every moment the assertion
    is accepted (its exp plus the clock-skew leeway), so pruning cannot forget it early. The
    record is a row (its expiry stored and compared by the database): SQLite and PostgreSQL."""
    app, client = storage_app, storage_app.test_client()
    jwt_client = create_client(
        app, auth_method="private_key_jwt", jwks={"keys": [rp_key.as_dict(private=False)]}
    )
    exp = int(time.time()) + 240
    value = assertion(jwt_client.client_id, rp_key, exp=exp)
    assert client.post("/token", data=assertion_request(value)).status_code == 200
    [record] = rows(app, UsedClientAssertion)
    leeway = PrivateKeyJWT().leeway
    assert record.expires_at.replace(tzinfo=UTC) == datetime.fromtimestamp(exp + leeway, UTC)
    # Pruning keeps evidence for a while past the record's expiry; at its last moment the
    # record is still there.
    last_moment = datetime.fromtimestamp(exp + leeway - 1, UTC) + ASSERTION_REPLAY_EVIDENCE
    with app.app_context():
        prune(db.session(), RetentionPolicy(
            now=last_moment, audit_retention_days=0,
            session_idle_ttl=3600, refresh_token_ttl=3600,
        ))  # fmt: skip
        db.session.commit()
    assert len(rows(app, UsedClientAssertion)) == 1
    assert error_of(client.post("/token", data=assertion_request(value))) == "invalid_client"


# -- each parameter once (RFC 6749 3.2) -----------------------------------------------------------
@pytest.mark.parametrize("where", ["body", "query", "body and query"])
def test_a_repeated_parameter_is_invalid_request_and_spends_nothing(
    rp: RelyingParty, user: CreatedUser, where: str
) -> None:
    """RFC 6749 3.2: "Request and response parameters MUST NOT be included more than once";
    the token endpoint refuses the request instead of reading the first value, and the code
    is left unspent. Once in the body and once in the query is twice too: the query's value was
    read (a redirect_uri other than the body's spent the code as invalid_grant)."""
    code = rp.obtain_code(user)["code"]
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": rp.verifier,
            "redirect_uri": rp.registered.redirect_uri}  # fmt: skip
    raw = f"{rp.registered.client_id}:{rp.registered.client_secret}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    if where == "body":
        body = MultiDict([*form.items(), ("code", secrets.token_urlsafe(32))])
        response = rp.browser.post("/token", data=body, headers=headers)
    elif where == "query":
        repeated = [("scope", "openid"), ("scope", "email")]
        response = rp.browser.post("/token", data=form, headers=headers, query_string=repeated)
    else:
        other = [("redirect_uri", "https://rp.example/other")]
        response = rp.browser.post("/token", data=form, headers=headers, query_string=other)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    assert rp.exchange(code).status_code == 200


# -- what an error description may hold (RFC 6749 5.2) --------------------------------------------
#: RFC 6749 5.2: "Values for the "error_description" parameter MUST NOT include characters
#: outside the set %x20-21 / %x23-5B / %x5D-7E".
ERROR_DESCRIPTION_CHARACTERS = set(map(chr, [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)]))


def b64url_json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "header",
    [{"alg": "RS256", "kid": 'rp-key-"1"'}, {"alg": "RS256", "kid": "rp-key-1", "crit": ["é"]},
     {"alg": 'RS"256', "kid": "rp-key-1"}, {"alg": "RS256", "kid": "rp\\key\n1"}],
    ids=["kid with a quote", "crit not ascii", "alg with a quote", "kid with a backslash"],
)  # fmt: skip
def test_an_assertion_header_the_error_would_quote_is_invalid_client_in_allowed_characters(
    client: FlaskClient, jwt_client: RegisteredClient, header: dict[str, Any]
) -> None:
    """RFC 6749 5.2: a client assertion whose header the verifier's message quotes (a ``kid``
    naming no key, an unsupported ``crit``, an unknown ``alg``) is ``invalid_client``, its
    description in the characters an error description may hold; a quote or a non-ASCII
    character there was a 500."""
    now = int(time.time())
    claims = {"iss": jwt_client.client_id, "sub": jwt_client.client_id, "aud": ISSUER,
              "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60}  # fmt: skip
    value = f"{b64url_json(header)}.{b64url_json(claims)}.c2lnbmF0dXJl"
    response = client.post("/token", data=assertion_request(value))
    assert error_of(response, response.status_code) == "invalid_client", response.text
    assert response.status_code in (400, 401)
    assert set(response.get_json().get("error_description", "")) <= ERROR_DESCRIPTION_CHARACTERS


@pytest.mark.parametrize("name", ['a"b', "a\\b", "é", "a\nb"])
def test_a_repeated_parameter_named_in_any_characters_is_invalid_request_in_allowed_ones(
    rp: RelyingParty, name: str
) -> None:
    """RFC 6749 3.2 and 5.2: a parameter repeated is ``invalid_request`` whatever its name; the
    description names it in the characters an error description may hold (a quote, a backslash,
    a line break or a non-ASCII character in the name was a 500)."""
    response = rp.token(MultiDict([("grant_type", "refresh_token"), (name, "1"), (name, "2")]))
    assert error_of(response) == "invalid_request"
    assert set(response.get_json()["error_description"]) <= ERROR_DESCRIPTION_CHARACTERS
