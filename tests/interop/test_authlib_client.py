"""Authlib's relying-party client (requests integration) against a live idp.

The whole OpenID Connect flow with OAuth2Session (PKCE S256), an ID token validated strictly
against the JWKS from discovery (signature, alg, iss, aud, exp, iat, nonce and an at_hash computed
here per OIDC Core 3.1.3.6), userinfo, refresh with rotation, introspection, revocation and
RP-initiated logout; with client_secret_basic, client_secret_post and private_key_jwt clients.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oidc import rpinitiated
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from tests.support.browserless import Browser, sign_in
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

SCOPE = "openid profile email offline_access"
PASSWORD = "correct horse battery staple 42"
LEEWAY = 30
TIMEOUT = 15
USER_NAME = "Ada Authlib"


# -- helpers --------------------------------------------------------------------------------------
def half_hash(value: str, alg: str) -> str:
    """OIDC Core 3.1.3.6: base64url of the left-most half of the hash of the ASCII octets of
    ``value``, with the hash of the ID token's alg (SHA-256 for RS256 and ES256)."""
    digest = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}[alg[-3:]](
        value.encode("ascii")
    ).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def server_keys(metadata: dict[str, Any]) -> KeySet:
    response = requests.get(metadata["jwks_uri"], timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(
        ("application/json", "application/jwk-set+json")
    )
    jwks = response.json()
    for key in jwks["keys"]:
        assert "d" not in key, "the JWKS publishes private key material"
        assert key.get("kid"), key
    return KeySet.import_key_set(jwks)


def validate_id_token(
    id_token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    alg: str,
    nonce: str | None,
    access_token: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """OIDC Core 3.1.3.7 with Authlib's CodeIDToken; returns (header, claims)."""
    # Signature against the JWKS from discovery; only the client's registered alg is accepted.
    token = jwt.decode(id_token, keys, algorithms=[alg])
    header = dict(token.header)
    assert header["alg"] == alg
    assert header.get("kid"), header
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    params: dict[str, Any] = {"access_token": access_token}
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
        params["nonce"] = nonce
    claims = CodeIDToken(token.claims, header, options=options, params=params)
    claims.validate(now=int(time.time()), leeway=LEEWAY)
    # 3.1.3.7 step 3 / 4: with several audiences, azp must be this client.
    if isinstance(claims["aud"], list) and len(claims["aud"]) > 1:
        assert claims.get("azp") == client_id
    assert claims["iat"] <= time.time() + LEEWAY
    # at_hash: CodeIDToken only checks it when present; here it must be present and right.
    assert claims.get("at_hash") == half_hash(access_token, alg), claims
    return header, dict(claims)


def validate_access_token(
    access_token: str, *, keys: KeySet, issuer: str, client_id: str
) -> dict[str, Any]:
    """RFC 9068: a JWT with typ at+jwt, signed with a key of the JWKS."""
    token = jwt.decode(access_token, keys, algorithms=["ES256", "RS256", "PS256", "EdDSA"])
    assert str(token.header.get("typ", "")).lower() in ("at+jwt", "application/at+jwt"), (
        token.header
    )
    JWTClaimsRegistry(
        now=int(time.time()),
        leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        client_id={"essential": True, "value": client_id},
    ).validate(token.claims)
    return dict(token.claims)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


@dataclass
class Relying:
    """A client registered with the idp, and the user who signs in to it."""

    client: dict[str, Any]
    auth_method: str
    alg: str
    first_party: bool
    redirect_uri: str
    post_logout_uri: str
    user: dict[str, Any]
    email: str
    private_key: RSAKey | None = None

    def session(self, metadata: dict[str, Any]) -> OAuth2Session:
        if self.auth_method == "private_key_jwt":
            assert self.private_key is not None
            session = OAuth2Session(
                self.client["client_id"],
                self.private_key,
                token_endpoint_auth_method="private_key_jwt",
                revocation_endpoint_auth_method="private_key_jwt",
                scope=SCOPE,
                redirect_uri=self.redirect_uri,
                code_challenge_method="S256",
                default_timeout=TIMEOUT,
            )
            # The audience is the issuer for every call (token, revocation, introspection), the
            # sole value draft-ietf-oauth-rfc7523bis 4 allows: Authlib signs for the URL it is
            # given, the URL it posts to if none (docs/integrating.md, private_key_jwt).
            session.register_client_auth_method(
                PrivateKeyJWT(
                    metadata["issuer"],
                    headers={"kid": self.private_key.kid},
                    alg="RS256",
                )
            )
            return session
        return OAuth2Session(
            self.client["client_id"],
            self.client["client_secret"],
            token_endpoint_auth_method=self.auth_method,
            revocation_endpoint_auth_method=self.auth_method,
            scope=SCOPE,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            default_timeout=TIMEOUT,
        )


def register(
    live_idp: LiveIdp,
    rp_base: str,
    tmp_path: Path,
    user: dict[str, Any],
    *,
    alg: str,
    auth_method: str,
    first_party: bool,
) -> Relying:
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"{rp_base}/al-{tag}/callback"
    post_logout_uri = f"{rp_base}/al-{tag}/logged-out"
    private_key = None
    jwks_file = None
    if auth_method == "private_key_jwt":
        private_key = RSAKey.generate_key(
            2048, parameters={"kid": f"rp-{tag}", "alg": "RS256", "use": "sig"}, private=True
        )
        jwks_file = tmp_path / "client-jwks.json"
        public = private_key.as_dict(private=False)
        assert "d" not in public
        jwks_file.write_text(json.dumps({"keys": [public]}))
    client = live_idp.create_client(
        name=f"Authlib {alg} {auth_method}",
        redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri],
        auth_method=auth_method,
        first_party=first_party,
        id_token_alg=alg,
        jwks_file=jwks_file,
    )
    if auth_method == "private_key_jwt":
        assert client["client_secret"] is None
    else:
        assert client["client_secret"]
    return Relying(
        client=client,
        auth_method=auth_method,
        alg=alg,
        first_party=first_party,
        redirect_uri=redirect_uri,
        post_logout_uri=post_logout_uri,
        user=user,
        email=user["email"],
        private_key=private_key,
    )


# -- the flow -------------------------------------------------------------------------------------
CASES = [
    pytest.param("RS256", "client_secret_basic", True, id="rs256-client_secret_basic"),
    pytest.param("ES256", "client_secret_post", False, id="es256-client_secret_post"),
    pytest.param("RS256", "private_key_jwt", True, id="rs256-private_key_jwt"),
]


@pytest.fixture(scope="module")
def user(live_idp: LiveIdp) -> dict[str, Any]:
    """One user for the module: every `idp` command costs seconds of start-up."""
    email = f"al-{uuid.uuid4().hex[:10]}@example.com"
    created = live_idp.create_user(email, PASSWORD, name=USER_NAME)
    assert created["email"] == email
    return created


@pytest.mark.parametrize(("alg", "auth_method", "first_party"), CASES)
def test_authlib_full_flow(
    live_idp: LiveIdp,
    rp_base: str,
    tmp_path: Path,
    user: dict[str, Any],
    alg: str,
    auth_method: str,
    first_party: bool,
) -> None:
    rp = register(
        live_idp, rp_base, tmp_path, user, alg=alg, auth_method=auth_method, first_party=first_party
    )
    try:
        run_flow(live_idp, rp)
    except Exception as error:
        error.add_note(f"--- idp server log ---\n{live_idp.log_tail()}")
        raise


def run_flow(live_idp: LiveIdp, rp: Relying) -> None:
    issuer = live_idp.url
    client_id = rp.client["client_id"]

    # Discovery, validated by Authlib's metadata models (OIDC Discovery 3, RP-Initiated Logout).
    metadata = live_idp.discovery()
    assert metadata["issuer"] == issuer
    OpenIDProviderMetadata(metadata).validate(metadata_classes=[rpinitiated.OpenIDProviderMetadata])
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert metadata.get("authorization_response_iss_parameter_supported") is True
    assert rp.alg in metadata["id_token_signing_alg_values_supported"]
    assert rp.auth_method in metadata["token_endpoint_auth_methods_supported"]
    keys = server_keys(metadata)

    session = rp.session(metadata)
    browser = Browser()
    try:
        # Authorization request with PKCE S256, nonce and state; sign-in in the browserless UA.
        verifier = generate_token(64)
        nonce = generate_token(24)
        url, state = session.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        assert query(url)["code_challenge_method"] == "S256"
        landing = browser.navigate(url, rp.redirect_uri, email=rp.email, password=PASSWORD)
        assert landing.logins == 1
        assert landing.consents == (0 if rp.first_party else 1)
        callback = query(landing.url)
        assert "error" not in callback, callback
        assert callback["state"] == state
        assert callback["iss"] == issuer  # RFC 9207

        # Code exchange (Authlib checks the state again) and strict ID token validation.
        token = session.fetch_token(
            metadata["token_endpoint"],
            authorization_response=landing.url,
            state=state,
            code_verifier=verifier,
        )
        assert token["token_type"].lower() == "bearer"
        assert set(token["scope"].split()) == set(SCOPE.split())
        assert token.get("refresh_token"), "no refresh token despite offline_access"
        header, claims = validate_id_token(
            token["id_token"],
            keys=keys,
            issuer=issuer,
            client_id=client_id,
            alg=rp.alg,
            nonce=nonce,
            access_token=token["access_token"],
        )
        assert header["alg"] == rp.alg
        assert claims["sub"] == rp.user["sub"]
        assert "pwd" in claims.get("amr", []), claims
        assert isinstance(claims.get("auth_time"), int)

        at_claims = validate_access_token(
            token["access_token"], keys=keys, issuer=issuer, client_id=client_id
        )
        assert at_claims["sub"] == claims["sub"]

        # UserInfo with the access token (Authlib adds the bearer header).
        userinfo = session.get(metadata["userinfo_endpoint"])
        assert userinfo.status_code == 200, userinfo.text
        info = userinfo.json()
        assert info["sub"] == claims["sub"] == rp.user["sub"]
        assert info["email"] == rp.email
        assert info.get("name") == USER_NAME

        # Refresh: a new access token and a rotated refresh token.
        first_refresh = token["refresh_token"]
        refreshed = session.refresh_token(metadata["token_endpoint"], refresh_token=first_refresh)
        assert refreshed["access_token"] != token["access_token"]
        assert refreshed.get("refresh_token")
        assert refreshed["refresh_token"] != first_refresh
        if refreshed.get("id_token"):
            # OIDC Core 12.2: same iss, sub and aud; no nonce check on refresh.
            _, refreshed_claims = validate_id_token(
                refreshed["id_token"],
                keys=keys,
                issuer=issuer,
                client_id=client_id,
                alg=rp.alg,
                nonce=None,
                access_token=refreshed["access_token"],
            )
            assert refreshed_claims["sub"] == claims["sub"]
        access_token = refreshed["access_token"]

        # Introspection (RFC 7662) of the live access token, authenticated as the client.
        introspection = session.introspect_token(
            metadata["introspection_endpoint"], token=access_token, token_type_hint="access_token"
        )
        assert introspection.status_code == 200, introspection.text
        active = introspection.json()
        assert active["active"] is True, active
        assert active.get("client_id") == client_id
        assert active.get("sub") == rp.user["sub"]
        assert set(active.get("scope", "").split()) == set(SCOPE.split())

        # Revocation (RFC 7009) of the access token.
        revocation = session.revoke_token(
            metadata["revocation_endpoint"], token=access_token, token_type_hint="access_token"
        )
        assert revocation.status_code == 200, revocation.text
        inactive = session.introspect_token(
            metadata["introspection_endpoint"], token=access_token, token_type_hint="access_token"
        )
        assert inactive.status_code == 200, inactive.text
        assert inactive.json() == {"active": False}

        # The revoked access token no longer opens the userinfo endpoint (RFC 6750 3.1).
        denied = requests.get(
            metadata["userinfo_endpoint"],
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=TIMEOUT,
        )
        assert denied.status_code == 401, denied.text
        challenge = denied.headers.get("WWW-Authenticate", "")
        assert challenge.startswith("Bearer"), challenge
        assert "invalid_token" in challenge, challenge

        # Once its successor was used, the rotated-out refresh token is spent for good (before
        # that, within refresh_token_retry_grace, presenting it again is a retry of a lost
        # answer): replaying it fails, and the reuse revokes the grant, so the current refresh
        # token dies too (RFC 9700 4.14.2).
        newest = rp.session(metadata).refresh_token(
            metadata["token_endpoint"], refresh_token=refreshed["refresh_token"]
        )
        with pytest.raises(OAuthError) as reuse:
            rp.session(metadata).refresh_token(
                metadata["token_endpoint"], refresh_token=first_refresh
            )
        assert reuse.value.error == "invalid_grant"
        current = session.introspect_token(
            metadata["introspection_endpoint"],
            token=newest["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert current.status_code == 200, current.text
        assert current.json() == {"active": False}

        # The code is single-use (RFC 6749 4.1.2): a second exchange fails.
        with pytest.raises(OAuthError) as replay:
            rp.session(metadata).fetch_token(
                metadata["token_endpoint"],
                authorization_response=landing.url,
                state=state,
                code_verifier=verifier,
            )
        assert replay.value.error == "invalid_grant"

        # RP-initiated logout with id_token_hint, post_logout_redirect_uri and state.
        logout_state = generate_token(16)
        end_session = metadata["end_session_endpoint"] + "?" + urlencode(
            {
                "id_token_hint": refreshed.get("id_token") or token["id_token"],
                "post_logout_redirect_uri": rp.post_logout_uri,
                "state": logout_state,
                "client_id": client_id,
            }
        )  # fmt: skip
        logged_out = browser.navigate(end_session, rp.post_logout_uri, allow_login=False)
        assert not logged_out.login_page, logged_out
        assert logged_out.url.startswith(rp.post_logout_uri + "?")
        assert query(logged_out.url).get("state") == logout_state

        # The browser session is gone: the next authorization request asks to sign in again.
        again, _ = rp.session(metadata).create_authorization_url(
            metadata["authorization_endpoint"],
            code_verifier=generate_token(64),
            nonce=generate_token(24),
        )
        after = browser.navigate(again, rp.redirect_uri, allow_login=False)
        assert after.login_page, f"signed in without a session after logout: {after.url}"
    finally:
        browser.close()
        session.close()


def test_sign_in_helper_reaches_callback(
    live_idp: LiveIdp, rp_base: str, user: dict[str, Any]
) -> None:
    """The helper's one-call form, as other suites use it."""
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"{rp_base}/helper-{tag}/callback"
    client = live_idp.create_client(
        name="helper", redirect_uris=[redirect_uri], first_party=True, id_token_alg="ES256"
    )
    metadata = live_idp.discovery()
    session = OAuth2Session(
        client["client_id"],
        client["client_secret"],
        scope="openid",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=generate_token(64)
    )
    with Browser() as browser:
        callback = sign_in(browser, url, redirect_uri, user["email"], PASSWORD)
    params = query(callback)
    assert params["state"] == state
    assert params["iss"] == live_idp.url
    assert params["code"]
    session.close()
