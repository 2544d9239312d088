"""DPoP server nonces (RFC 9449 8, 9), on a deployment that requires them (``dpop_nonces``):
a proof without the nonce idp gave is ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``, a proof
with it is served, and each answer to a DPoP request gives the next nonce."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import sqlite_app
from tests.functional.test_dpop import dpop_userinfo, public_rp
from tests.support.dpop import USERINFO_URL, DPoPKey
from tests.support.factories import create_user


@pytest.fixture
def nonce_app(tmp_path: Path) -> Flask:
    return sqlite_app(tmp_path, dpop_nonces=True)


def test_a_token_request_needs_the_nonce_idp_gave(nonce_app: Flask) -> None:
    rp, key = public_rp(nonce_app), DPoPKey()
    code = rp.obtain_code(create_user(nonce_app))["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    asked = rp.token(data, dpop=key.proof())
    assert asked.status_code == 400
    assert asked.get_json()["error"] == "use_dpop_nonce"
    nonce = asked.headers["DPoP-Nonce"]
    assert "DPoP-Nonce" in asked.headers["Access-Control-Expose-Headers"]
    # Refused before the grant ran: the code is still the client's.
    served = rp.token(data, dpop=key.proof(claims={"nonce": nonce}))
    assert served.status_code == 200, served.text
    assert served.get_json()["token_type"] == "DPoP"
    following = served.headers["DPoP-Nonce"]
    refreshed = rp.refresh(served.get_json()["refresh_token"],
                           dpop=key.proof(claims={"nonce": following}))  # fmt: skip
    assert refreshed.status_code == 200, refreshed.text


def test_userinfo_needs_the_nonce_idp_gave(nonce_app: Flask) -> None:
    """RFC 9449 9: at a protected resource, 401 with ``error="use_dpop_nonce"`` and the nonce."""
    rp, key = public_rp(nonce_app), DPoPKey()
    code = rp.obtain_code(create_user(nonce_app))["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    nonce = rp.token(data, dpop=key.proof()).headers["DPoP-Nonce"]
    token = rp.token(data, dpop=key.proof(claims={"nonce": nonce})).get_json()["access_token"]
    asked = dpop_userinfo(rp.browser, token, key.proof("GET", USERINFO_URL, access_token=token))
    assert asked.status_code == 401
    assert 'error="use_dpop_nonce"' in asked.headers["WWW-Authenticate"]
    nonce = asked.headers["DPoP-Nonce"]
    proof = key.proof("GET", USERINFO_URL, access_token=token, claims={"nonce": nonce})
    served = dpop_userinfo(rp.browser, token, proof)
    assert served.status_code == 200, served.text
    assert served.headers["DPoP-Nonce"]


def test_without_the_setting_no_nonce_is_asked_or_given(app: Flask) -> None:
    rp, key = public_rp(app), DPoPKey()
    code = rp.obtain_code(create_user(app))["code"]
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": rp.registered.redirect_uri, "code_verifier": rp.verifier}  # fmt: skip
    served = rp.token(data, dpop=key.proof())
    assert served.status_code == 200, served.text
    assert "DPoP-Nonce" not in served.headers
