"""Authlib's relying-party client reads ``groups`` and a mapped claim (docs/integrating.md,
section 6): the scopes requested through OAuth2Session, the claims read from an ID token validated
strictly against the JWKS, and from userinfo with Authlib's bearer session."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from authlib.common.security import generate_token

from tests.interop.test_authlib_client import (
    PASSWORD,
    query,
    register,
    server_keys,
    validate_id_token,
)
from tests.support.browserless import Browser
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

GROUP_SCOPE = "openid profile groups roles"


def test_authlib_reads_groups_and_mapped_roles(
    live_idp: LiveIdp, rp_base: str, tmp_path: Path
) -> None:
    email = f"gr-{uuid.uuid4().hex[:10]}@example.com"
    user: dict[str, Any] = live_idp.create_user(email, PASSWORD, name="Grace Groups")
    tag = uuid.uuid4().hex[:6]
    admins, staff = f"admins-{tag}", f"staff-{tag}"
    for name in (admins, staff):
        live_idp.cli("groups", "create", name, "--json")
        live_idp.cli("groups", "add", name, email, "--json")
    rp = register(live_idp, rp_base, tmp_path, user, alg="RS256",
                  auth_method="client_secret_basic", first_party=True)  # fmt: skip
    client_id = rp.client["client_id"]
    edited = live_idp.cli(
        "clients", "edit", client_id, "--scope", "openid", "--scope", "profile",
        "--scope", "groups", "--scope", "roles", "--allowed-group", staff,
        "--claim-map", f"roles:{admins}=admin", "--claim-map", f"roles:{staff}=viewer", "--json",
    )  # fmt: skip
    assert edited["allowed_groups"] == [staff]

    metadata = live_idp.discovery()
    assert "groups" in metadata["scopes_supported"]
    assert "groups" in metadata["claims_supported"]
    session = rp.session(metadata)
    session.scope = GROUP_SCOPE
    verifier, nonce = generate_token(64), generate_token(24)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    with Browser() as browser:
        landing = browser.navigate(url, rp.redirect_uri, email=email, password=PASSWORD)
    callback = query(landing.url)
    assert "error" not in callback, callback
    token = session.fetch_token(
        metadata["token_endpoint"],
        authorization_response=landing.url,
        state=state,
        code_verifier=verifier,
    )
    assert set(token["scope"].split()) == set(GROUP_SCOPE.split())
    _, claims = validate_id_token(
        token["id_token"], keys=server_keys(metadata), issuer=live_idp.url, client_id=client_id,
        alg="RS256", nonce=nonce, access_token=token["access_token"],
    )  # fmt: skip
    assert claims["groups"] == sorted([admins, staff])
    assert claims["roles"] == ["admin", "viewer"]
    userinfo = session.get(metadata["userinfo_endpoint"])
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["groups"] == sorted([admins, staff])
    assert userinfo.json()["roles"] == ["admin", "viewer"]
