"""DPoP server nonces (RFC 9449 8, 9) with openid-client against a live idp that requires them
(``IDP_DPOP_NONCES``): the library's first proof carries no nonce, idp answers
``use_dpop_nonce`` with one, and openid-client retries with it on its own, at the token endpoint
and at UserInfo; the rest of rp_openid_client.mjs's flow then runs as with any DPoP client."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.test_openid_client import ALL_STEPS, PASSWORD, run_rp, user
from tests.support.live import IDP_BIN, LiveIdp, start_live_idp

pytestmark = pytest.mark.interop

__all__ = ["user"]  # the module's user fixture, shared with test_openid_client


@pytest.fixture(scope="module")
def live_idp() -> Iterator[LiveIdp]:
    """A live idp of this module's own, requiring DPoP nonces."""
    assert IDP_BIN.exists(), f"{IDP_BIN} does not exist: install idp into the venv"
    with (
        tempfile.TemporaryDirectory(prefix="idp-interop-nonces-") as tmp,
        start_live_idp(Path(tmp), env={"IDP_DPOP_NONCES": "true"}) as idp,
    ):
        yield idp


def test_openid_client_follows_idps_dpop_nonces(
    live_idp: LiveIdp, node_bin: str, rp_base: str, user: dict[str, Any]
) -> None:
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"{rp_base}/dpop-nonce-{tag}/callback"
    post_logout_uri = f"{rp_base}/dpop-nonce-{tag}/logged-out"
    client = live_idp.create_client(
        name="openid-client DPoP nonces", redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri], public=True, auth_method="none",
        first_party=True,
    )  # fmt: skip

    result = run_rp(node_bin, live_idp, {
        "issuer": live_idp.url, "client_id": client["client_id"], "client_secret": None,
        "auth_method": "none", "redirect_uri": redirect_uri,
        "post_logout_redirect_uri": post_logout_uri, "email": user["email"],
        "password": PASSWORD, "expected_alg": "RS256", "dpop": True,
    })  # fmt: skip

    assert result["steps"] == ALL_STEPS
    assert result["token_response"]["token_type"].lower() == "dpop"
    assert result["userinfo"]["email"] == user["email"]
    # idp did ask: the first token request (no nonce yet) was refused, and openid-client followed.
    assert live_idp.log_path is not None
    assert "POST oidc.token 400" in live_idp.log_path.read_text(errors="replace")
