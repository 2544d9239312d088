"""Authlib's relying-party client signing in to pairwise clients of a live idp (OIDC Core 8.1):
the ID token it validates, userinfo, introspection and a refresh name the user by the client's
sector ``sub``; two clients of one sector get the same one, another sector another, and the ID
token as ``id_token_hint`` logs out without a confirmation (RP-Initiated Logout 1.0)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from authlib.common.security import generate_token

from tests.interop.test_authlib_client import (
    PASSWORD,
    Relying,
    query,
    server_keys,
    validate_access_token,
    validate_id_token,
)
from tests.support.browserless import Browser
from tests.support.live import LiveIdp

pytestmark = pytest.mark.interop

USER_NAME = "Ada Pairwise"


def pairwise_client(
    live_idp: LiveIdp, user: dict[str, Any], host: str, sector: str | None
) -> Relying:
    # Never contacted: the browserless user agent stops at the redirect URI.
    tag = uuid.uuid4().hex[:10]
    redirect_uri = f"https://{host}/{tag}/callback"
    post_logout_uri = f"https://{host}/{tag}/logged-out"
    client = live_idp.create_client(
        name=f"Pairwise {host}", redirect_uris=[redirect_uri],
        post_logout_redirect_uris=[post_logout_uri], first_party=True,
        subject_type="pairwise", sector_identifier=sector,
    )  # fmt: skip
    assert (client["subject_type"], client["sector_identifier"]) == ("pairwise", sector)
    return Relying(client=client, auth_method="client_secret_basic", alg="RS256",
                   first_party=True, redirect_uri=redirect_uri, post_logout_uri=post_logout_uri,
                   user=user, email=user["email"])  # fmt: skip


def sign_in_and_check(live_idp: LiveIdp, rp: Relying) -> str:
    """The whole flow as Authlib runs it; the ``sub`` every answer agrees on."""
    metadata = live_idp.discovery()
    assert metadata["subject_types_supported"] == ["public", "pairwise"]
    keys = server_keys(metadata)
    session = rp.session(metadata)
    browser = Browser()
    verifier, nonce = generate_token(64), generate_token(24)
    url, state = session.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    landing = browser.navigate(url, rp.redirect_uri, email=rp.email, password=PASSWORD)
    token = session.fetch_token(metadata["token_endpoint"], authorization_response=landing.url,
                                state=state, code_verifier=verifier)  # fmt: skip
    _, claims = validate_id_token(
        token["id_token"], keys=keys, issuer=live_idp.url, client_id=rp.client["client_id"],
        alg=rp.alg, nonce=nonce, access_token=token["access_token"],
    )  # fmt: skip
    sub = str(claims["sub"])
    at_claims = validate_access_token(token["access_token"], keys=keys, issuer=live_idp.url,
                                      client_id=rp.client["client_id"])  # fmt: skip
    assert at_claims["sub"] == sub
    userinfo = session.get(metadata["userinfo_endpoint"])
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == sub
    refreshed = session.refresh_token(metadata["token_endpoint"],
                                      refresh_token=token["refresh_token"])  # fmt: skip
    introspection = session.introspect_token(
        metadata["introspection_endpoint"], token=refreshed["access_token"],
        token_type_hint="access_token",
    )  # fmt: skip
    assert introspection.json()["sub"] == sub
    # The ID token as id_token_hint names the signed-in user: the logout needs no confirmation
    # and returns to the app with its state.
    logout_state = generate_token(16)
    end_session = metadata["end_session_endpoint"] + "?" + urlencode({
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": rp.post_logout_uri,
        "state": logout_state,
    })  # fmt: skip
    logged_out = browser.navigate(end_session, rp.post_logout_uri, allow_login=False)
    assert not logged_out.login_page, logged_out
    assert query(logged_out.url).get("state") == logout_state
    return sub


def test_authlib_signs_in_to_pairwise_clients_of_one_and_of_another_sector(
    live_idp: LiveIdp,
) -> None:
    email = f"pw-{uuid.uuid4().hex[:10]}@example.com"
    user = live_idp.create_user(email, PASSWORD, name=USER_NAME)
    shop = pairwise_client(live_idp, user, "shop.example.com", None)
    shop_admin = pairwise_client(live_idp, user, "admin.shop.example.net", "shop.example.com")
    blog = pairwise_client(live_idp, user, "blog.example.org", None)
    try:
        subs = [sign_in_and_check(live_idp, rp) for rp in (shop, shop_admin, blog)]
    except Exception as error:
        error.add_note(f"--- idp server log ---\n{live_idp.log_tail()}")
        raise
    assert subs[0] == subs[1]
    assert subs[2] != subs[0]
    assert user["sub"] not in subs
