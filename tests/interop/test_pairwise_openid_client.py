"""panva's openid-client (v6) signing in to a pairwise client of a live idp (OIDC Core 8.1):
the library validates the ID token and checks that userinfo's ``sub`` is the ID token's
(OIDC Core 5.3.2); here, that every surface names the user by the client's own ``sub``, never
by their id, and that the ID token as ``id_token_hint`` logs out without a confirmation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.interop.test_openid_client import ALL_STEPS, PASSWORD, run_rp, user
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

__all__ = ["user"]  # the module's user fixture, shared


def test_openid_client_signs_in_to_a_pairwise_client(
    live_idp: LiveIdp, node_bin: str, rp_base: str, user: dict[str, Any]
) -> None:
    tag = uuid.uuid4().hex[:10]
    # A loopback redirect URI: the client is a sector of its own (docs/admins.md).
    redirect_uri = f"{rp_base}/pw-{tag}/callback"
    post_logout_uri = f"{rp_base}/pw-{tag}/logged-out"
    client = live_idp.create_client(
        name="openid-client pairwise", redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri], auth_method="client_secret_basic",
        first_party=True, id_token_alg="RS256", subject_type="pairwise",
    )  # fmt: skip
    assert client["subject_type"] == "pairwise"
    result = run_rp(node_bin, live_idp, {
        "issuer": live_idp.url, "client_id": client["client_id"],
        "client_secret": client["client_secret"], "auth_method": "client_secret_basic",
        "redirect_uri": redirect_uri, "post_logout_redirect_uri": post_logout_uri,
        "email": user["email"], "password": PASSWORD, "expected_alg": "RS256",
    })  # fmt: skip
    assert result["steps"] == ALL_STEPS
    sub = result["id_token"]["claims"]["sub"]
    assert sub != user["sub"]
    assert result["access_token"]["claims"]["sub"] == sub
    assert result["userinfo"]["sub"] == sub
    assert result["introspection_active"]["sub"] == sub
    assert result["logout"]["state_echoed"] is True
    assert result["session_ended"] is True
