"""Pushed authorization requests (RFC 9126) with openid-client (Node.js, panva's OpenID-certified
relying-party library) against a live idp: ``buildAuthorizationUrlWithPAR`` pushes each
authorization request to the endpoint discovery names, authenticated as at the token endpoint,
and sends the browser with client_id and request_uri only; the whole flow of
rp_openid_client.mjs then runs (sign-in through idp's pages, strict ID token validation,
userinfo, refresh, introspection, revocation, logout). Each client is registered with
``--require-par``, so a request that had not been pushed would have been refused."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.interop.test_openid_client import ALL_STEPS, PASSWORD, run_rp, user
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

__all__ = ["user"]  # the module's user fixture, shared with test_openid_client


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "none"])
def test_openid_client_signs_in_through_pushed_authorization_requests(
    live_idp: LiveIdp, node_bin: str, rp_base: str, user: dict[str, Any], auth_method: str
) -> None:
    public = auth_method == "none"
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"{rp_base}/par-{tag}/callback"
    post_logout_uri = f"{rp_base}/par-{tag}/logged-out"
    client = live_idp.create_client(
        name=f"openid-client PAR {auth_method}", redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri], public=public, auth_method=auth_method,
        first_party=True, require_par=True,
    )  # fmt: skip
    assert client["require_pushed_authorization_requests"] is True

    result = run_rp(node_bin, live_idp, {
        "issuer": live_idp.url, "client_id": client["client_id"],
        "client_secret": client["client_secret"], "auth_method": auth_method,
        "redirect_uri": redirect_uri, "post_logout_redirect_uri": post_logout_uri,
        "email": user["email"], "password": PASSWORD, "expected_alg": "RS256", "par": True,
    })  # fmt: skip

    assert result["steps"] == ALL_STEPS
    assert result["authorization_url_parameters"] == ["client_id", "request_uri"]
    assert result["sign_in"]["login_pages"] == 1
    assert result["id_token"]["claims"]["sub"] == user["sub"]
    assert result["userinfo"]["email"] == user["email"]
    # The second request after logout was pushed too, and asked for a sign-in again.
    assert result["session_ended"] is True
