"""OpenID Connect RP-Initiated Logout 1.0: where the user is sent, what ends, and when idp asks
first."""

from __future__ import annotations

import base64
import hmac
import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import JWKRegistry, KeySet
from sqlalchemy import update
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp.extensions import db
from idp.models import Client
from idp.models.base import utcnow
from idp.oidc.checks import MAX_STATE_LENGTH
from idp.services.clients import ClientService
from idp.services.signing_keys import KeyStore
from tests.conftest import sqlite_app
from tests.support.clock import key_unpublished
from tests.support.factories import POST_LOGOUT_URI, CreatedUser, create_client, create_user
from tests.support.flow import (
    CROSS_SITE,
    SAME_ORIGIN,
    RelyingParty,
    csrf_token,
    jwt_parts,
    query_of,
    resubmission,
    start_session,
)

SESSION_COOKIE = "idp_session"  # the issuer is http://localhost: no __Host- prefix


def session_is_alive(rp: RelyingParty) -> bool:
    """Ask with prompt=none: a code means the browser session still stands."""
    params = query_of(rp.authorize(prompt="none").headers["Location"])
    if "code" in params:
        return True
    assert params["error"] == "login_required"
    return False


def introspect(rp: RelyingParty, token: str) -> dict[str, Any]:
    secret = rp.registered.client_secret
    assert secret is not None
    raw = f"{rp.registered.client_id}:{secret}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    response = rp.browser.post("/introspect", data={"token": token}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.get_json()
    return body


def logout(rp: RelyingParty, **params: str) -> TestResponse:
    return rp.browser.get("/logout", query_string=params)


def assert_page(response: TestResponse, status: int) -> None:
    assert response.status_code == status, response.text
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"


# -- with a valid id_token_hint: no confirmation needed (RP-Initiated Logout 2, 3) ----------------
def test_logout_redirects_to_the_registered_uri_with_state(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = logout(
        rp,
        id_token_hint=tokens["id_token"],
        post_logout_redirect_uri=POST_LOGOUT_URI,
        state="after-logout",
    )
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=after-logout"


def test_rp_may_post_the_logout_request(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    """RP-Initiated Logout 2: the OP MUST support POST as well as GET (no CSRF token: the
    request comes from the relying party's page, and the id_token_hint vouches for it)."""
    data = {
        "id_token_hint": tokens["id_token"],
        "post_logout_redirect_uri": POST_LOGOUT_URI,
        "state": "posted",
    }
    response = rp.browser.post("/logout", data=data)
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=posted"
    assert not session_is_alive(rp)


def test_a_logout_posted_from_the_relying_partys_site_ends_the_session(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 1.0 section 2: the OP MUST support POST. A browser sends idp's
    session cookie (SameSite=Lax, RFC 6265bis 5.6.7.1) with a cross-site top-level GET but not
    with a cross-site POST, so the relying party's logout form reached idp without the session:
    nothing ended, and idp redirected back as if it had (the user still signed in, on a shared
    computer say). Such a POST is posted again from idp's own page, with the cookie."""
    data = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": POST_LOGOUT_URI,
            "state": "posted"}  # fmt: skip
    # The browser withholds the Lax cookie from the cross-site POST: a client without cookies.
    from_the_rp = app.test_client().post("/logout", data=data, headers=CROSS_SITE)
    action, fields = resubmission(from_the_rp)
    assert session_is_alive(rp)
    response = rp.browser.post(action, data=MultiDict(fields), headers=SAME_ORIGIN)
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=posted"
    assert not session_is_alive(rp)


def test_logout_ends_the_browser_session(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    cookie = rp.browser.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert session_is_alive(rp)
    logout(rp, id_token_hint=tokens["id_token"], post_logout_redirect_uri=POST_LOGOUT_URI)
    assert rp.browser.get_cookie(SESSION_COOKIE) is None
    assert not session_is_alive(rp)
    # Ended server-side too: the old cookie, replayed, is worthless.
    rp.browser.set_cookie(SESSION_COOKIE, cookie.value)
    assert not session_is_alive(rp)


@pytest.mark.parametrize("scope", ["openid profile", "openid offline_access"])
def test_logout_ends_the_access_tokens_of_the_session(
    rp: RelyingParty, user: CreatedUser, scope: str
) -> None:
    tokens = rp.tokens_for(user, scope=scope)
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    logout(rp, id_token_hint=tokens["id_token"])
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert introspect(rp, tokens["access_token"]) == {"active": False}


def test_a_code_not_yet_exchanged_ends_with_its_session_even_for_offline_access(
    rp: RelyingParty, user: CreatedUser
) -> None:
    """RP-Initiated Logout 2: what the session authorised ends with it. OIDC Core 11 lets a
    refresh token the client already holds outlive the session, but an unredeemed code gave the
    client nothing yet: after logout it is invalid_grant (RFC 6749 5.2), while the refresh token
    issued before the logout still works."""
    tokens = rp.tokens_for(user, scope="openid offline_access")
    pending = rp.obtain_code(user, scope="openid offline_access")["code"]
    logout(rp, id_token_hint=tokens["id_token"])
    response = rp.exchange(pending)
    assert response.status_code == 400, response.text
    assert response.get_json()["error"] == "invalid_grant"
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text


def test_logout_with_unregistered_post_logout_uri_does_not_redirect(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 3: no redirect unless the URI exactly matches a registered one."""
    response = logout(
        rp,
        id_token_hint=tokens["id_token"],
        post_logout_redirect_uri="https://attacker.example/signed-out",
        state="x",
    )
    assert_page(response, 200)
    assert "signed out" in response.text


def test_logout_with_post_logout_uri_of_another_client_does_not_redirect(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    create_client(app, post_logout_redirect_uris=["https://other.example/bye"])
    response = logout(
        rp, id_token_hint=tokens["id_token"], post_logout_redirect_uri="https://other.example/bye"
    )
    assert_page(response, 200)


def test_logout_without_post_logout_uri_shows_the_signed_out_page(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = logout(rp, id_token_hint=tokens["id_token"])
    assert_page(response, 200)
    assert not session_is_alive(rp)


# -- invalid requests: a page, never a redirect (RP-Initiated Logout 4) ---------------------------
@pytest.mark.parametrize("hint", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_logout_with_an_invalid_id_token_hint_is_a_400_page(
    rp: RelyingParty, tokens: dict[str, Any], hint: str
) -> None:
    response = logout(rp, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT_URI)
    assert_page(response, 400)
    assert session_is_alive(rp)


def test_a_state_longer_than_authorize_takes_is_a_400_page_and_no_redirect(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """The state is echoed into the post-logout Location (RP-Initiated Logout 1.0 section 3);
    /authorize refuses one longer than ``MAX_STATE_LENGTH``, and so does the logout, as an
    error that is never redirected (section 4). Nothing ends; the longest allowed comes back."""
    refused = logout(rp, id_token_hint=tokens["id_token"],
                     post_logout_redirect_uri=POST_LOGOUT_URI,
                     state="s" * (MAX_STATE_LENGTH + 1))  # fmt: skip
    assert_page(refused, 400)
    assert session_is_alive(rp)
    longest = "s" * MAX_STATE_LENGTH
    accepted = logout(rp, id_token_hint=tokens["id_token"],
                      post_logout_redirect_uri=POST_LOGOUT_URI, state=longest)  # fmt: skip
    assert accepted.status_code == 302, accepted.text
    assert accepted.headers["Location"] == f"{POST_LOGOUT_URI}?state={longest}"


@pytest.mark.parametrize(
    ("name", "second"),
    [("post_logout_redirect_uri", " "), ("id_token_hint", " "), ("state", "other")],
)
def test_a_repeated_logout_parameter_is_a_400_page_and_no_redirect(
    rp: RelyingParty, tokens: dict[str, Any], name: str, second: str
) -> None:
    """Each parameter once, as at the authorization endpoint (RFC 6749 3.1): a second redirect
    URI, hint or state was ignored and the browser sent back with the first. An error is never
    redirected (RP-Initiated Logout 1.0 section 4), and nothing ends."""
    params = [
        ("id_token_hint", tokens["id_token"]),
        ("post_logout_redirect_uri", POST_LOGOUT_URI),
        ("state", "s1"),
        (name, second),
    ]
    assert_page(rp.browser.get("/logout", query_string=MultiDict(params)), 400)
    assert session_is_alive(rp)


def test_an_access_token_is_no_id_token_hint(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    """RP-Initiated Logout 1.0 section 2 and RFC 8725 3.11: an access token (``typ`` at+jwt),
    signed with the same keys and held by every resource server the client calls, does not
    pass for an ID token: the request is refused and the session stands."""
    assert jwt_parts(tokens["access_token"])[0]["typ"] == "at+jwt"
    assert_page(logout(rp, id_token_hint=tokens["access_token"]), 400)
    assert session_is_alive(rp)


def test_an_id_token_of_another_issuer_is_no_id_token_hint(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 1.0 section 2: "the OP MUST validate that it was the issuer of the ID
    Token". An ID token signed by idp's own key but naming another issuer (the deployment's old
    address, a staging copy restored from its database: the keys outlive the issuer) is no hint:
    the request is refused, nothing ends, and nobody is redirected (section 4)."""
    header, claims = jwt_parts(tokens["id_token"])
    with app.app_context():
        key = app.extensions["idp"].keys.signing_key(db.session(), header["alg"])
        elsewhere = jwt.encode(
            {"alg": header["alg"], "typ": header["typ"], "kid": key.kid},
            {**claims, "iss": "https://old-idp.example"},
            key.private_key,
            algorithms=[header["alg"]],
        )
    page = logout(rp, id_token_hint=elsewhere, post_logout_redirect_uri=POST_LOGOUT_URI)
    assert_page(page, 400)
    assert session_is_alive(rp)


def _without_alg(key: Any) -> Any:
    """``key`` as a JWK without its ``alg`` member (RFC 7517 4.4: optional)."""
    fields = key.as_dict(private=key.is_private)
    fields.pop("alg", None)
    return JWKRegistry.import_key(fields)


@pytest.mark.parametrize("jwk_alg", [True, False], ids=["keys-name-alg", "keys-without-alg"])
@pytest.mark.parametrize("alg", ["PS256", "RS384", "RS512", "HS256", "none"])
def test_a_hint_whose_alg_is_not_its_keys_is_no_id_token_hint(
    app: Flask,
    rp: RelyingParty,
    tokens: dict[str, Any],
    alg: str,
    jwk_alg: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 8725 3.1: the hint's ``alg`` is the one its key signs with, never the header's choice.
    Authlib's end_session allows every algorithm the JWKS's keys could verify (an RSA key: RS256
    to RS512, PS256 to PS512); only joserfc holding a key to its JWK ``alg`` member stopped an ID
    token re-signed by idp's RSA key with PS256 or RS512 from ending the session unasked, so the
    keys are also handed to Authlib without that member: idp pins the algorithm itself, by the
    ``kid``'s stored key. ``none`` and HS256 (the public key as an HMAC secret) are refused too.
    The request is a 400 page, nothing ends and nobody is redirected (section 4)."""
    if not jwk_alg:
        verification_keyset = KeyStore.verification_keyset

        def without_alg(self: KeyStore, *args: Any, **kwargs: Any) -> KeySet:
            keys = verification_keyset(self, *args, **kwargs)
            return KeySet([_without_alg(key) for key in keys.keys])

        monkeypatch.setattr(KeyStore, "verification_keyset", without_alg)
    header, claims = jwt_parts(tokens["id_token"])
    assert header["alg"] == "RS256"
    with app.app_context():
        key = app.extensions["idp"].keys.signing_key(db.session(), "RS256")
        head = {"alg": alg, "typ": header["typ"], "kid": key.kid}
        if alg in ("HS256", "none"):
            # Forged by hand: joserfc signs neither with an RSA key.
            body = ".".join(
                base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                for part in (head, claims)
            )
            secret = json.dumps(key.public_jwk, sort_keys=True).encode()
            signature = (
                base64.urlsafe_b64encode(hmac.new(secret, body.encode(), "sha256").digest())
                .rstrip(b"=")
                .decode()
                if alg == "HS256"
                else ""
            )
            hint = f"{body}.{signature}"
        else:
            # The same key without its JWK ``alg``, which joserfc would otherwise hold it to.
            hint = jwt.encode(head, claims, _without_alg(key.private_key), algorithms=[alg])
    page = logout(rp, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT_URI)
    assert_page(page, 400)
    assert session_is_alive(rp)


def test_logout_with_client_id_not_matching_the_hint_is_a_400_page(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    other = create_client(app, name="Other")
    response = logout(
        rp,
        id_token_hint=tokens["id_token"],
        client_id=other.client_id,
        post_logout_redirect_uri=POST_LOGOUT_URI,
    )
    assert_page(response, 400)
    assert session_is_alive(rp)


# -- without id_token_hint: ask the user first (RP-Initiated Logout 6) ----------------------------
def test_logout_without_id_token_hint_asks_for_confirmation(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    response = logout(rp, client_id=rp.registered.client_id, state="x")
    assert_page(response, 200)
    assert '<form method="post" action="/logout">' in response.text
    assert 'name="confirm" value="yes"' in response.text
    csrf_token(response.text)
    assert session_is_alive(rp)


def test_the_confirmation_names_the_user_and_lets_them_stay_signed_in(
    rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 2: the OP asks the user "whether to log out"; the page that asks names
    who is signed in and has a way to stay so (before, its one button signed out: a user who
    opened it by mistake had no way on but the browser's back button)."""
    page = logout(rp)
    assert_page(page, 200)
    assert (
        f'Signed in as <span class="phrase"><strong class="address">{user.email}</strong>.</span>'
        in page.text
    )
    stay = re.search(r'<a class="button" id="stay-signed-in" href="([^"]+)">Stay signed in</a>',
                     page.text)  # fmt: skip
    assert stay is not None
    assert rp.browser.get(stay.group(1)).status_code == 200  # the portal, still signed in
    assert session_is_alive(rp)


def test_confirmed_logout_with_csrf_token_ends_the_session(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    page = logout(rp)
    response = rp.browser.post(
        "/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"}
    )
    assert_page(response, 200)
    assert "signed out" in response.text
    assert not session_is_alive(rp)
    assert rp.userinfo(tokens["access_token"]).status_code == 401


def test_confirmed_logout_without_id_token_hint_does_not_redirect(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 3: without a hint the redirect's legitimacy cannot be confirmed."""
    page = logout(rp, client_id=rp.registered.client_id, post_logout_redirect_uri=POST_LOGOUT_URI)
    form = {
        "csrf_token": csrf_token(page.text),
        "confirm": "yes",
        "client_id": rp.registered.client_id,
        "post_logout_redirect_uri": POST_LOGOUT_URI,
    }
    assert_page(rp.browser.post("/logout", data=form), 200)
    assert not session_is_alive(rp)


def test_logout_post_without_csrf_token_is_400(rp: RelyingParty, tokens: dict[str, Any]) -> None:
    response = rp.browser.post("/logout", data={"confirm": "yes"})
    assert_page(response, 400)
    assert session_is_alive(rp)


def test_logout_post_without_confirmation_only_asks(
    rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    page = logout(rp)
    response = rp.browser.post("/logout", data={"csrf_token": csrf_token(page.text)})
    assert_page(response, 200)
    assert 'name="confirm" value="yes"' in response.text
    assert session_is_alive(rp)


# -- the signed-out page's way back to the app (RP-Initiated Logout 1.0 section 3) ---------------
def _signed_out_page(rp: RelyingParty, **params: str) -> TestResponse:
    """Sign out by the confirmation (no hint, so no redirect), with ``params`` in the query and
    the form; the signed-out page."""
    page = logout(rp, **params)
    form = {"csrf_token": csrf_token(page.text), "confirm": "yes", **params}
    response = rp.browser.post("/logout", data=form)
    assert_page(response, 200)
    assert "You are signed out" in response.text
    return response


def _back_link(page: TestResponse) -> tuple[str, str] | None:
    found = re.search(r'<a[^>]*id="back-to-app" href="([^"]*)">([^<]*)</a>', page.text)
    return (unescape(found.group(1)), unescape(found.group(2))) if found else None


def _elsewhere(app: Flask, client_id: str, **values: object) -> None:
    """Change the client's row as another node does: past this process's sessions and its
    cached copy of the registration (idp.services.client_cache)."""
    with app.app_context(), db.engine.begin() as connection:
        table = Client.__table__
        connection.execute(update(table).where(table.c.client_id == client_id).values(**values))


@pytest.mark.usefixtures("node_caches_held")
def test_the_signed_out_pages_link_names_only_an_enabled_client_and_its_registered_address(
    app: Flask, client: FlaskClient
) -> None:
    """RP-Initiated Logout 1.0 section 3 allows the signed-out page to offer the app's
    post-logout address, but the query's ``client_id`` is anyone's to write: the link names a
    client enabled in the stored registration (not a node's cached copy, which still named a
    client disabled elsewhere for ``client_cache_ttl``), goes to an address registered for it
    now and acceptable under today's rules (never a ``javascript:`` address stored before
    them), and nothing of the query is written into the page."""
    user = create_user(app)
    registered = create_client(app, name="Relying Party")
    rp = RelyingParty(client, registered)
    ask = {"client_id": registered.client_id}

    rp.tokens_for(user)  # the token side has cached the registration
    assert _back_link(_signed_out_page(rp, **ask)) == (POST_LOGOUT_URI, "Back to Relying Party")

    # Nothing of the query is reflected: an unknown client, an unregistered address.
    start_session(client, user)
    odd = {"client_id": "<b>nobody</b>", "post_logout_redirect_uri": "https://evil.example/x"}
    page = _signed_out_page(rp, **odd)
    assert _back_link(page) is None
    assert "nobody" not in page.text
    assert "evil.example" not in page.text

    # The address registered now, not the one the cached copy holds.
    moved = "https://rp.example/moved"
    _elsewhere(app, registered.client_id, post_logout_redirect_uris=[moved])
    start_session(client, user)
    assert _back_link(_signed_out_page(rp, **ask)) == (moved, "Back to Relying Party")

    # An address today's rules refuse, stored before them, is no link; the next one is.
    script = "javascript:alert(document.cookie)"
    _elsewhere(app, registered.client_id, post_logout_redirect_uris=[script, moved])
    start_session(client, user)
    assert _back_link(_signed_out_page(rp, **ask)) == (moved, "Back to Relying Party")
    _elsewhere(app, registered.client_id, post_logout_redirect_uris=[script])
    start_session(client, user)
    page = _signed_out_page(rp, **ask)
    assert _back_link(page) is None
    assert "javascript:" not in page.text

    # A client disabled on another node names no app, though this node's copy is enabled.
    _elsewhere(app, registered.client_id, post_logout_redirect_uris=[moved], disabled_at=utcnow())
    start_session(client, user)
    page = _signed_out_page(rp, **ask)
    assert _back_link(page) is None
    assert "Relying Party" not in page.text


# -- an id_token_hint ends only what the requesting browser holds (RP-Initiated Logout 2, 6) ------
def test_logout_by_id_token_hint_without_the_browsers_session_ends_nothing(
    app: Flask, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """An ID token is no capability over sessions: relying parties (and whoever they leak it to)
    hold it. A cookieless request ends no session and revokes no grant, of this RP or another."""
    other_rp = RelyingParty(rp.browser, create_client(app, name="Other"))
    other_tokens = other_rp.tokens_for(user)
    stranger = app.test_client()  # no session cookie
    hint = {"id_token_hint": tokens["id_token"]}
    assert stranger.get("/logout", query_string=hint).status_code == 200
    assert stranger.post("/logout", data=hint).status_code == 200
    assert session_is_alive(rp)
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    assert other_rp.userinfo(other_tokens["access_token"]).status_code == 200
    assert introspect(rp, tokens["access_token"])["active"] is True


def test_logout_by_id_token_hint_ends_this_browsers_session_only(
    app: Flask, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """The same user signed in on a second device keeps that session and its apps' tokens."""
    laptop = RelyingParty(app.test_client(), create_client(app, name="Laptop app"))
    laptop_tokens = laptop.tokens_for(user)
    logout(rp, id_token_hint=tokens["id_token"])
    assert not session_is_alive(rp)
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    assert session_is_alive(laptop)
    assert laptop.userinfo(laptop_tokens["access_token"]).status_code == 200


def test_a_hint_of_another_session_of_the_same_user_asks_first(
    app: Flask, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """RP-Initiated Logout 1.0 section 2: a hint whose ``sid`` is not the relying party's
    current session is suspect. The user's ID token from a session since ended (signed out,
    then in again) or from another device (leaked from a relying party's logs) names the user
    signed in here but not this session: it ended this browser's session unasked. The user is
    asked first, and once they confirm goes back to the app the hint named; the hint of this
    session still ends it at once."""
    laptop = RelyingParty(app.test_client(), rp.registered)
    from_the_laptop = laptop.tokens_for(user)["id_token"]
    assert_page(logout(rp, id_token_hint=from_the_laptop), 200)
    assert session_is_alive(rp)
    assert session_is_alive(laptop)

    assert logout(rp, id_token_hint=tokens["id_token"]).status_code == 200
    assert not session_is_alive(rp)
    start_session(rp.browser, user)
    page = logout(rp, id_token_hint=tokens["id_token"], post_logout_redirect_uri=POST_LOGOUT_URI,
                  state="s1")  # fmt: skip
    assert_page(page, 200)
    assert 'name="confirm" value="yes"' in page.text
    assert session_is_alive(rp)
    confirmed = rp.browser.post("/logout", data={**hidden_fields(page.text), "confirm": "yes"})
    assert confirmed.headers["Location"] == f"{POST_LOGOUT_URI}?state=s1"
    assert not session_is_alive(rp)

    again = rp.tokens_for(user)["id_token"]
    assert logout(rp, id_token_hint=again).status_code == 200
    assert not session_is_alive(rp)


def test_logout_by_id_token_hint_for_another_user_asks_first(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """A hint about someone other than the user signed in here is no valid hint for this
    browser (RP-Initiated Logout 6): ask before ending anything."""
    someone = create_user(app, email="grace@example.com")
    theirs = RelyingParty(app.test_client(), rp.registered)
    their_tokens = theirs.tokens_for(someone)
    response = logout(rp, id_token_hint=their_tokens["id_token"])
    assert_page(response, 200)
    assert 'name="confirm" value="yes"' in response.text
    assert session_is_alive(rp)
    assert session_is_alive(theirs)


@pytest.mark.parametrize("cut_off", ["disabled", "deleted"])
def test_a_hint_of_a_client_no_longer_served_asks_first(
    app: Flask, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any], cut_off: str
) -> None:
    """RP-Initiated Logout 1.0 sections 2 and 6: the ID token of an app the admin disabled or
    deleted, though it names the user signed in here, is no hint to end this browser's session
    unasked (a public client's carried the user's id, and signed the user out of idp and every
    other app); the user is asked first, as for a pairwise client's, and nobody is redirected."""
    other = RelyingParty(rp.browser, create_client(app, name="Cut off"))
    hint = other.tokens_for(user)["id_token"]
    with app.app_context():
        rt = app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        row = db.session.get(Client, other.registered.client_id)
        assert row is not None
        if cut_off == "disabled":
            service.disable(row)
        else:
            service.delete(row)
        db.session.commit()
    page = logout(rp, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT_URI)
    assert_page(page, 200)
    assert 'name="confirm" value="yes"' in page.text
    assert session_is_alive(rp)
    confirmed = rp.browser.post(
        "/logout", data={"csrf_token": csrf_token(page.text), "confirm": "yes"}
    )
    assert_page(confirmed, 200)
    assert not session_is_alive(rp)


def test_an_id_token_hint_signed_by_a_key_since_unpublished_still_logs_out(tmp_path: Path) -> None:
    """RP-Initiated Logout 1.0 section 2: the OP SHOULD accept an ID token of a current session
    "even when the exp time has passed". Two hours after a rotation its key has left the JWKS;
    the session it was issued in lives on, and so does the hint."""
    app = sqlite_app(tmp_path)
    browser = app.test_client()
    rp = RelyingParty(browser, create_client(app))
    id_token = rp.tokens_for(create_user(app))["id_token"]
    with key_unpublished(app, browser, id_token):
        response = browser.get("/logout", query_string={
            "id_token_hint": id_token, "post_logout_redirect_uri": POST_LOGOUT_URI, "state": "s",
        })  # fmt: skip
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=s"


# -- the confirmation keeps the way back a valid hint opened (RP-Initiated Logout 3, 6) -----------
def hidden_fields(html: str) -> dict[str, str]:
    found = re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', html)
    return {name: unescape(value) for name, value in found}


def another_users_hint(app: Flask, rp: RelyingParty) -> str:
    someone = create_user(app, email="grace@example.com")
    token: str = RelyingParty(app.test_client(), rp.registered).tokens_for(someone)["id_token"]
    return token


def test_a_confirmed_logout_for_another_users_hint_returns_to_the_app(
    app: Flask, rp: RelyingParty, tokens: dict[str, Any]
) -> None:
    """The hint (with no client_id) named the app and its registered post-logout address, but
    another user than the one signed in here: idp asks first (section 6), and the confirmation
    brings the user back to the app with its state (section 3), without copying the other user's
    ID token into the page."""
    hint = another_users_hint(app, rp)
    page = logout(rp, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT_URI, state="s1")
    assert_page(page, 200)
    assert hint not in page.text
    fields = hidden_fields(page.text)
    assert fields["client_id"] == rp.registered.client_id
    assert session_is_alive(rp)
    response = rp.browser.post("/logout", data={**fields, "confirm": "yes"})
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=s1"
    assert not session_is_alive(rp)


def test_the_way_back_is_only_for_the_confirming_browser_and_the_validated_address(
    app: Flask, rp: RelyingParty, user: CreatedUser, tokens: dict[str, Any]
) -> None:
    """The sealed way back signs no one out by itself (no confirmation, no CSRF token: nothing
    ends), names exactly the client and address idp validated, and only for the browser session
    it was shown to: changed, moved to another browser or forged, the logout still ends this
    browser's session once confirmed, but sends nobody anywhere."""
    also = "https://rp.example/also-signed-out"
    two_ways = create_client(app, name="Two", post_logout_redirect_uris=[POST_LOGOUT_URI, also])
    hint = another_users_hint(app, RelyingParty(rp.browser, two_ways))
    page = logout(rp, id_token_hint=hint, post_logout_redirect_uri=POST_LOGOUT_URI)
    fields = hidden_fields(page.text)
    assert "logout_return" in fields
    assert_page(rp.browser.post("/logout", data=fields), 200)
    assert_page(
        rp.browser.post("/logout", data={**fields, "csrf_token": "", "confirm": "yes"}), 400
    )
    assert session_is_alive(rp)

    other = create_client(
        app, name="Other", post_logout_redirect_uris=["https://other.example/out"]
    )
    changed = [
        {"post_logout_redirect_uri": also},
        {"post_logout_redirect_uri": "https://rp.example/elsewhere"},
        {"client_id": other.client_id, "post_logout_redirect_uri": "https://other.example/out"},
        {"logout_return": fields["logout_return"][:-2] + "xx"},
    ]
    for change in changed:
        browser = RelyingParty(app.test_client(), rp.registered)
        browser.tokens_for(user)
        form = {**fields, **change, "csrf_token": csrf_token(logout(browser).text)}
        assert_page(browser.browser.post("/logout", data={**form, "confirm": "yes"}), 200)
        assert not session_is_alive(browser)
    # Another browser (another session) with the page's own fields and its own CSRF token.
    elsewhere = RelyingParty(app.test_client(), rp.registered)
    elsewhere.tokens_for(user)
    form = {**fields, "csrf_token": csrf_token(logout(elsewhere).text), "confirm": "yes"}
    assert_page(elsewhere.browser.post("/logout", data=form), 200)
    assert session_is_alive(rp)
