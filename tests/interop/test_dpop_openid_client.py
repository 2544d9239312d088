"""DPoP (RFC 9449) with openid-client (Node.js, panva's OpenID-certified relying-party library)
against a live idp: ``getDPoPHandle`` with a key generated for the run signs a proof for the code
exchange, the refresh and userinfo; rp_openid_client.mjs checks that the tokens come back of type
DPoP, the access token bound to the key (``cnf.jkt``), and that the same access token presented
as a bearer token is refused; then the rest of its flow (introspection, revocation, logout)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.interop.test_openid_client import ALL_STEPS, PASSWORD, run_rp, user
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

__all__ = ["user"]  # the module's user fixture, shared with test_openid_client


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "none"])
def test_openid_client_signs_in_refreshes_and_reads_userinfo_with_dpop(
    live_idp: LiveIdp, node_bin: str, rp_base: str, user: dict[str, Any], auth_method: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"{rp_base}/dpop-{tag}/callback"
    post_logout_uri = f"{rp_base}/dpop-{tag}/logged-out"
    client = live_idp.create_client(
        name=f"openid-client DPoP {auth_method}", redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri], public=auth_method == "none",
        auth_method=auth_method, first_party=True,
    )  # fmt: skip

    result = run_rp(node_bin, live_idp, {
        "issuer": live_idp.url, "client_id": client["client_id"],
        "client_secret": client["client_secret"], "auth_method": auth_method,
        "redirect_uri": redirect_uri, "post_logout_redirect_uri": post_logout_uri,
        "email": user["email"], "password": PASSWORD, "expected_alg": "RS256", "dpop": True,
    })  # fmt: skip

    assert result["steps"] == ALL_STEPS
    assert result["token_response"]["token_type"].lower() == "dpop"
    assert isinstance(result["access_token"]["claims"]["cnf"]["jkt"], str)
    assert result["userinfo"]["email"] == user["email"]
    refused = result["bound_token_as_bearer"]
    assert refused["status"] == 401
    assert refused["challenge"].startswith("DPoP ")
    if auth_method == "client_secret_basic":
        # RFC 9449 6.2: introspection names the key the refreshed token is bound to.
        introspected = result["introspection_active"]
        assert introspected["token_type"] == "DPoP"
        assert introspected["cnf"] == result["access_token"]["claims"]["cnf"]
