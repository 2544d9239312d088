"""openid-client (Node.js, an OpenID-certified relying-party library) against a live idp.

Each case registers a client with the idp command line, then runs rp_openid_client.mjs, which does
discovery, the authorization code flow with PKCE through the sign-in pages, strict ID token
validation, userinfo, refresh with rotation, introspection, revocation and RP-initiated logout.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import pytest

from tests.support.browserless import Browser, answer_device_request
from tests.support.live import INTEROP_DIR, LiveIdp

pytestmark = pytest.mark.interop

SCRIPT = INTEROP_DIR / "rp_openid_client.mjs"
PASSWORD = "correct horse battery staple 42"
NODE_TIMEOUT = 120
USER_NAME = "Ada openid-client"

ALL_STEPS = [
    "discovery",
    "authorization request",
    "sign-in",
    "authorization code grant",
    "access token (RFC 9068)",
    "userinfo",
    "refresh token grant",
    "introspection",
    "revocation",
    "introspection after revocation",
    "userinfo after revocation",
    "end session",
    "session ended",
]

CASES = [
    pytest.param("RS256", "client_secret_basic", False, True, id="rs256-client_secret_basic"),
    pytest.param("ES256", "client_secret_post", False, False, id="es256-client_secret_post"),
    pytest.param("RS256", "none", True, True, id="rs256-public-none"),
]


def run_rp(node_bin: str, live_idp: LiveIdp, params: dict[str, Any]) -> dict[str, Any]:
    completed = subprocess.run(
        [node_bin, str(SCRIPT)],
        input=json.dumps(params),
        cwd=INTEROP_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        check=False,
    )
    try:
        result = json.loads(completed.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = None
    if completed.returncode != 0 or not isinstance(result, dict) or not result.get("ok"):
        pytest.fail(
            f"openid-client relying party failed (exit {completed.returncode})\n"
            f"stderr: {completed.stderr[-4000:]}\n"
            f"stdout: {completed.stdout[-6000:]}\n"
            f"--- idp server log ---\n{live_idp.log_tail()}",
            pytrace=False,
        )
    return result


@pytest.fixture(scope="module")
def user(live_idp: LiveIdp) -> dict[str, Any]:
    """One user for the module: every `idp` command costs seconds of start-up."""
    email = f"oc-{uuid.uuid4().hex[:10]}@example.com"
    created = live_idp.create_user(email, PASSWORD, name=USER_NAME)
    assert created["email"] == email
    return created


@pytest.mark.parametrize(("alg", "auth_method", "public", "first_party"), CASES)
def test_openid_client_full_flow(
    live_idp: LiveIdp,
    node_bin: str,
    rp_base: str,
    user: dict[str, Any],
    alg: str,
    auth_method: str,
    public: bool,
    first_party: bool,
) -> None:
    tag = uuid.uuid4().hex[:10]
    email = user["email"]
    redirect_uri = f"{rp_base}/oc-{tag}/callback"
    post_logout_uri = f"{rp_base}/oc-{tag}/logged-out"
    client = live_idp.create_client(
        name=f"openid-client {alg} {auth_method}",
        redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri],
        public=public,
        auth_method=auth_method,
        first_party=first_party,
        id_token_alg=alg,
    )
    if public:
        assert client["client_secret"] is None
    else:
        assert client["client_secret"]

    result = run_rp(
        node_bin,
        live_idp,
        {
            "issuer": live_idp.url,
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "auth_method": auth_method,
            "redirect_uri": redirect_uri,
            "post_logout_redirect_uri": post_logout_uri,
            "email": email,
            "password": PASSWORD,
            "expected_alg": alg,
        },
    )

    assert result["steps"] == ALL_STEPS
    assert result["discovery"]["issuer"] == live_idp.url

    # Sign-in: one login page; a consent page only for third-party clients.
    assert result["sign_in"]["login_pages"] == 1
    assert result["sign_in"]["consent_pages"] == (0 if first_party else 1)
    assert result["sign_in"]["cookie_warnings"] == []

    # ID token: validated by openid-client (signature via JWKS, iss, aud, exp, nonce) and by
    # the script (alg, at_hash); here the claims themselves.
    header, claims = result["id_token"]["header"], result["id_token"]["claims"]
    assert header["alg"] == alg
    assert header.get("kid")
    assert claims["iss"] == live_idp.url
    assert claims["sub"] == user["sub"]
    assert claims["aud"] in (client["client_id"], [client["client_id"]])
    assert "pwd" in claims.get("amr", []), claims
    assert isinstance(claims.get("auth_time"), int), claims
    assert claims["auth_time"] <= claims["iat"] + 5
    assert claims["exp"] > claims["iat"]

    # RFC 9068 access token.
    at_header, at_claims = result["access_token"]["header"], result["access_token"]["claims"]
    assert at_header["typ"].lower() in ("at+jwt", "application/at+jwt")
    assert at_claims["iss"] == live_idp.url
    assert at_claims["client_id"] == client["client_id"]
    assert at_claims["sub"] == user["sub"]
    assert set(at_claims["scope"].split()) >= {"openid", "profile", "email", "offline_access"}

    # UserInfo agrees with the ID token and the registered user.
    userinfo = result["userinfo"]
    assert userinfo["sub"] == claims["sub"] == user["sub"]
    assert userinfo["email"] == email
    assert userinfo.get("name") == USER_NAME

    # Refresh rotated; the revoked access token is dead everywhere.
    assert result["refresh"]["rotated"] is True
    if public:
        # RFC 7662 2.1: introspection needs client authentication; a public client has none.
        assert result["introspection_active"].get("refused") is True
    else:
        assert result["introspection_active"]["active"] is True
        assert result["introspection_active"]["client_id"] == client["client_id"]
        assert result["introspection_active"]["sub"] == user["sub"]
        assert result["introspection_revoked"] == {"active": False}
    assert result["userinfo_after_revoke"]["failed"] is True
    assert result["userinfo_after_revoke"]["status"] == 401

    # RP-initiated logout echoed the state, and the session is gone.
    assert result["logout"]["state_echoed"] is True
    assert result["logout"]["redirect"].startswith(post_logout_uri + "?")
    assert result["session_ended"] is True


DEVICE_SCRIPT = INTEROP_DIR / "rp_device_flow.mjs"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def test_openid_client_device_flow(live_idp: LiveIdp, node_bin: str, user: dict[str, Any]) -> None:
    """openid-client's ``initiateDeviceAuthorization`` and ``pollDeviceAuthorizationGrant``
    (RFC 8628) complete against idp while the test approves on idp's pages with a password
    session; the ID token passes openid-client's validation. A public client (a command line
    tool); confidential ones are covered by the functional and browser tests."""
    auth_method = "none"
    public = auth_method == "none"
    client = live_idp.create_client(
        name=f"openid-client device {auth_method}", redirect_uris=[], public=public,
        auth_method=auth_method, first_party=True,
        grant_types=[DEVICE_GRANT, "refresh_token"],
    )  # fmt: skip
    params = {"issuer": live_idp.url, "client_id": client["client_id"],
              "client_secret": client["client_secret"], "auth_method": auth_method}  # fmt: skip
    device = subprocess.Popen(
        [node_bin, str(DEVICE_SCRIPT), json.dumps(params)], cwd=INTEROP_DIR, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert device.stdout is not None
        started = json.loads(device.stdout.readline() or "{}")
        assert started.get("user_code"), started
        assert started["verification_uri_complete"].startswith(live_idp.url + "/device?")
        with Browser() as browser:
            approved = answer_device_request(browser, live_idp.url, started["user_code"],
                                             email=user["email"], password=PASSWORD)  # fmt: skip
        assert approved.status_code == 200, approved.text
        out, err = device.communicate(timeout=NODE_TIMEOUT)
    finally:
        if device.poll() is None:
            device.kill()
            device.wait()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], (result, err, live_idp.log_tail())
    assert result["claims"]["sub"] == user["sub"]
    assert result["claims"]["aud"] == client["client_id"]
    assert result["has_refresh_token"] is True
    assert result["token_type"].lower() == "bearer"
