"""Pairwise subject identifiers (OIDC Core 8.1; docs/integrating.md, "Subject identifiers"): a
pairwise client knows each user by a ``sub`` of its sector, the same on every surface that sends
or reads one, and never by the user's id."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import Client
from idp.services.client_fields import fields_of
from idp.services.clients import ClientService
from tests.functional.test_backchannel_logout import drain, verified
from tests.functional.test_device_flow import answer, device_for
from tests.functional.test_tokens_and_claims import introspect
from tests.support.factories import CreatedUser, RegisteredClient, create_client, create_user
from tests.support.flow import RelyingParty, jwt_parts, query_of, start_session
from tests.support.logout_receiver import LogoutReceiver, logout_receiver

SHOP = "https://shop.example.com/cb"
SHOP_ADMIN = "https://shop.example.com/admin/cb"
BLOG = "https://blog.example.org/cb"


def pairwise(app: Flask, redirect_uri: str, **kwargs: Any) -> RegisteredClient:
    return create_client(app, redirect_uris=[redirect_uri], subject_type="pairwise", **kwargs)


def subs_seen(rp: RelyingParty, user: CreatedUser) -> set[str]:
    """Every ``sub`` the client is told about the user: the ID token's, the access token's,
    userinfo's, introspection's of the access and the refresh token, and after a refresh."""
    tokens = rp.tokens_for(user)
    seen = {
        jwt_parts(tokens["id_token"])[1]["sub"],
        jwt_parts(tokens["access_token"])[1]["sub"],
        rp.userinfo(tokens["access_token"]).get_json()["sub"],
        introspect(rp, tokens["access_token"])["sub"],
        introspect(rp, tokens["refresh_token"])["sub"],
    }
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    seen.add(jwt_parts(refreshed.get_json()["access_token"])[1]["sub"])
    return seen


def test_each_sector_sees_its_own_sub_and_public_clients_the_user_id(storage_app: Flask) -> None:
    app = storage_app
    user = create_user(app)
    shop = pairwise(app, SHOP)
    shop_admin = pairwise(app, SHOP_ADMIN)  # the same host: the same sector
    blog = pairwise(app, BLOG)
    # Another host, but named into the shop's sector by the admin.
    shop_app = create_client(app, redirect_uris=[BLOG], subject_type="pairwise",
                             sector_identifier="shop.example.com")  # fmt: skip
    public = create_client(app)
    browser = app.test_client()
    [at_shop] = subs_seen(RelyingParty(browser, shop), user)
    [at_shop_admin] = subs_seen(RelyingParty(browser, shop_admin), user)
    [at_blog] = subs_seen(RelyingParty(browser, blog), user)
    [at_shop_app] = subs_seen(RelyingParty(browser, shop_app), user)
    [at_public] = subs_seen(RelyingParty(browser, public), user)
    assert at_shop == at_shop_admin == at_shop_app
    assert at_blog != at_shop
    assert user.id not in (at_shop, at_blog)
    assert at_public == user.id
    # Another user of the same sector gets another value.
    other = create_user(app, email="grace@example.com")
    [other_at_shop] = subs_seen(RelyingParty(app.test_client(), shop), other)
    assert other_at_shop not in (at_shop, other.id)


def test_the_pairwise_sub_is_the_same_on_another_node(storage_app: Flask, tmp_path: Any) -> None:
    """Every node reads the one secret from the database: a second application on the same
    database (another node, or this one restarted) computes the same value."""
    from idp import create_app
    from tests.conftest import app_overrides

    user = create_user(storage_app)
    shop = pairwise(storage_app, SHOP)
    [first] = subs_seen(RelyingParty(storage_app.test_client(), shop), user)
    url = storage_app.config["SQLALCHEMY_DATABASE_URI"]
    other_node = create_app(app_overrides(str(url), tmp_path))
    try:
        [second] = subs_seen(RelyingParty(other_node.test_client(), shop), user)
    finally:
        with other_node.app_context():
            db.engine.dispose()
    assert second == first


def test_a_pairwise_id_token_hint_names_the_signed_in_user(storage_app: Flask) -> None:
    """OIDC Core 3.1.2.1: prompt=none with the hint of the user signed in answers with a code; a
    hint of another user is login_required."""
    app = storage_app
    user = create_user(app)
    other = create_user(app, email="grace@example.com")
    shop = pairwise(app, SHOP)
    browser = app.test_client()
    rp = RelyingParty(browser, shop)
    tokens = rp.tokens_for(user)
    response = rp.authorize(prompt="none", id_token_hint=tokens["id_token"])
    assert response.status_code == 302, response.text
    assert "code" in query_of(response.headers["Location"])
    # The other user's hint, in this user's browser.
    other_tokens = RelyingParty(app.test_client(), shop).tokens_for(other)
    response = rp.authorize(prompt="none", id_token_hint=other_tokens["id_token"])
    assert query_of(response.headers["Location"])["error"] == "login_required"


def test_a_pairwise_id_token_hint_ends_the_session_without_asking(storage_app: Flask) -> None:
    """RP-Initiated Logout 1.0 section 2: the hint names the signed-in user (by the client's
    pairwise ``sub``), so the logout needs no confirmation; another user's hint asks."""
    app = storage_app
    user = create_user(app)
    other = create_user(app, email="grace@example.com")
    shop = pairwise(app, SHOP)
    other_tokens = RelyingParty(app.test_client(), shop).tokens_for(other)
    browser = app.test_client()
    tokens = RelyingParty(browser, shop).tokens_for(user)
    asked = browser.get("/logout", query_string={"id_token_hint": other_tokens["id_token"]})
    assert 'name="confirm"' in asked.text
    response = browser.get("/logout", query_string={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": shop.redirect_uri,
    })  # fmt: skip
    assert 'name="confirm"' not in response.text
    assert browser.get("/account").status_code == 302  # signed out


@pytest.fixture
def receiver() -> Any:
    with logout_receiver() as running:
        yield running


def test_a_logout_token_names_the_user_and_session_as_the_clients_id_tokens(
    app: Flask, client: FlaskClient, receiver: LogoutReceiver, user: CreatedUser
) -> None:
    shop = pairwise(app, SHOP, backchannel_logout_uri=receiver.url("/shop"))
    public = create_client(app, backchannel_logout_uri=receiver.url("/public"))
    tokens = RelyingParty(client, shop).tokens_for(user)
    public_tokens = RelyingParty(client, public).tokens_for(user)
    response = client.get("/logout", query_string={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200, response.text
    drain(app)
    [to_shop] = receiver.tokens("/shop")
    [to_public] = receiver.tokens("/public")
    at_shop, at_public = verified(app, to_shop, shop), verified(app, to_public, public)
    id_claims = jwt_parts(tokens["id_token"])[1]
    public_sid = jwt_parts(public_tokens["id_token"])[1]["sid"]
    assert at_shop["sub"] == id_claims["sub"] != user.id
    assert at_public["sub"] == user.id
    # One browser session, named apart to each sector (else its sid would correlate the user),
    # each client's logout token naming it as the client's ID tokens did.
    assert at_shop["sid"] == id_claims["sid"] != public_sid
    assert at_public["sid"] == public_sid


def test_a_device_flow_client_has_a_sector_of_its_own(
    app: Flask, client: FlaskClient, user: CreatedUser, clock: FrozenClock
) -> None:
    """A client without redirect URIs (RFC 8628 alone) is a sector of its own: two such
    clients never share a ``sub``."""
    start_session(client, user)
    seen = []
    for _ in range(2):
        device = device_for(app, subject_type="pairwise")
        codes = device.codes()
        assert answer(client, codes["user_code"]).status_code == 200
        clock.advance(timedelta(seconds=5))
        response = device.poll(codes["device_code"])
        assert response.status_code == 200, response.text
        tokens = response.get_json()
        sub = jwt_parts(tokens["id_token"])[1]["sub"]
        assert jwt_parts(tokens["access_token"])[1]["sub"] == sub
        userinfo = device.http.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert userinfo.get_json()["sub"] == sub
        seen.append(sub)
    assert len(set(seen)) == 2
    assert user.id not in seen


def test_client_credentials_name_the_client_whatever_its_subject_type(
    app: Flask, client: FlaskClient
) -> None:
    """RFC 9068 2.2: a client credentials token's ``sub`` is the client itself."""
    shop = pairwise(app, SHOP, grant_types=["client_credentials"])
    rp = RelyingParty(client, shop)
    response = rp.token({"grant_type": "client_credentials"})
    assert response.status_code == 200, response.text
    token = response.get_json()["access_token"]
    assert jwt_parts(token)[1]["sub"] == shop.client_id
    assert introspect(rp, token)["sub"] == shop.client_id


def test_discovery_lists_both_subject_types(client: FlaskClient) -> None:
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["subject_types_supported"] == ["public", "pairwise"]


def confirm_subject_change(app: Flask, client_id: str, **change: Any) -> None:
    """The admin's confirmed change of a client's subject type or sector (docs/admins.md)."""
    with app.app_context():
        rt = app.extensions["idp"]
        service = ClientService(db.session(), rt.client_secrets, issuer=rt.settings.issuer)
        client = db.session.get(Client, client_id)
        assert client is not None
        service.update(client, replace(fields_of(client), **change), confirm_subject_change=True)
        db.session.commit()


@pytest.mark.parametrize("change", [{"subject_type": "pairwise"}, {"subject_type": "public"},
                                    {"sector_identifier": "corp.example"}])  # fmt: skip
def test_a_token_issued_before_a_subject_change_keeps_its_sub(
    storage_app: Flask, change: dict[str, str]
) -> None:
    """OIDC Core 5.3.2: userinfo's ``sub`` must be the ID token's, or the relying party refuses
    the answer; RFC 7662 2.2: introspection names the token's own subject. An access token issued
    before the admin changed the client's subjects answers with the ``sub`` it and its ID token
    carry; the next refresh issues tokens of the new one."""
    app = storage_app
    user = create_user(app)
    subject_type = "public" if change.get("subject_type") == "pairwise" else "pairwise"
    shop = pairwise(app, SHOP) if subject_type == "pairwise" else create_client(app)
    rp = RelyingParty(app.test_client(), shop)
    tokens = rp.tokens_for(user)
    before = jwt_parts(tokens["id_token"])[1]["sub"]
    confirm_subject_change(app, shop.client_id, **change)
    assert rp.userinfo(tokens["access_token"]).get_json()["sub"] == before
    assert introspect(rp, tokens["access_token"])["sub"] == before
    refreshed = rp.refresh(tokens["refresh_token"]).get_json()["access_token"]
    after = rp.userinfo(refreshed).get_json()["sub"]
    assert after != before
    assert introspect(rp, refreshed)["sub"] == jwt_parts(refreshed)[1]["sub"] == after
