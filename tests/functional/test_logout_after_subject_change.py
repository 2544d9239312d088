"""Back-channel logout after a change of the client's subject type or sector (docs/admins.md,
"Pairwise subject identifiers"): the logout token names the user and the session by the ``sub``
and ``sid`` of the ID token the relying party received (Back-Channel Logout 1.0 2.4, 2.6), which
its grant recorded, not by the client's settings at the logout, which the relying party never
saw. The receiver is a real HTTP server (tests.support.logout_receiver)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update

from idp.clock import FrozenClock
from idp.models import Grant
from tests.functional.test_backchannel_logout import drain, verified
from tests.functional.test_device_flow import answer, device_for
from tests.functional.test_pairwise_subjects import SHOP, confirm_subject_change, pairwise
from tests.support.factories import (
    RegisteredClient,
    change,
    create_client,
    create_user,
    rows,
)
from tests.support.flow import RelyingParty, csrf_token, jwt_parts, start_session
from tests.support.logout_receiver import LogoutReceiver, logout_receiver

#: Each kind of confirmed change, and the subject type the client has before it.
CHANGES = [
    pytest.param("pairwise", {"subject_type": "public"}, id="pairwise-to-public"),
    pytest.param("public", {"subject_type": "pairwise"}, id="public-to-pairwise"),
    pytest.param("pairwise", {"sector_identifier": "corp.example"}, id="another-sector"),
]


@pytest.fixture
def receiver() -> Iterator[LogoutReceiver]:
    with logout_receiver() as running:
        yield running


def shop_client(app: Flask, subject_type: str, receiver: LogoutReceiver) -> RegisteredClient:
    uri = receiver.url("/shop")
    if subject_type == "pairwise":
        return pairwise(app, SHOP, backchannel_logout_uri=uri)
    return create_client(app, redirect_uris=[SHOP], backchannel_logout_uri=uri)


def named_by(tokens: dict[str, Any]) -> tuple[str, str]:
    """The ``sub`` and ``sid`` an ID token names the user and the session by."""
    claims = jwt_parts(tokens["id_token"])[1]
    return claims["sub"], claims["sid"]


def sign_out(browser: FlaskClient) -> None:
    """Sign out in the portal, with no id_token_hint: the logout token must not depend on how
    the logout was asked for."""
    page = browser.get("/account")
    form = {"csrf_token": csrf_token(page.text), "confirm": "yes"}
    assert browser.post("/logout", data=form).status_code == 200


def announced(app: Flask, receiver: LogoutReceiver, registered: RegisteredClient) -> set[Any]:
    drain(app)
    told = [verified(app, token, registered) for token in receiver.tokens("/shop")]
    return {(claims["sub"], claims["sid"]) for claims in told}


@pytest.mark.parametrize(("before", "subject_change"), CHANGES)
def test_a_logout_after_a_subject_change_names_the_sub_and_sid_of_the_rps_id_token(
    storage_app: Flask, receiver: LogoutReceiver, before: str, subject_change: dict[str, str]
) -> None:
    """The relying party's session rests on the ID token it received; after the admin's
    confirmed change, the logout token named the new ``sub`` and ``sid``, which it never saw,
    and the logout ended nothing there."""
    app = storage_app
    user = create_user(app)
    shop = shop_client(app, before, receiver)
    browser = app.test_client()
    tokens = RelyingParty(browser, shop).tokens_for(user)
    confirm_subject_change(app, shop.client_id, **subject_change)
    sign_out(browser)
    assert announced(app, receiver, shop) == {named_by(tokens)}


def test_a_code_exchanged_after_the_change_is_announced_as_its_id_token_named_it(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """A code issued before the change and exchanged after it: its ID token names the new values
    (computed at the exchange), which the grant records then in place of those of the code's
    issue."""
    app = storage_app
    user = create_user(app)
    shop = shop_client(app, "public", receiver)
    browser = app.test_client()
    rp = RelyingParty(browser, shop)
    code = rp.obtain_code(user)["code"]
    confirm_subject_change(app, shop.client_id, subject_type="pairwise")
    exchanged = rp.exchange(code)
    assert exchanged.status_code == 200, exchanged.text
    tokens = exchanged.get_json()
    assert named_by(tokens)[0] != user.id  # the pairwise sub: the change reached the ID token
    sign_out(browser)
    assert announced(app, receiver, shop) == {named_by(tokens)}


def test_each_sub_and_sid_a_client_was_given_in_the_session_is_announced(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """An authorization before the change and one after, in one session: the relying party may
    keep a session on either ID token, so each pair gets its logout token."""
    app = storage_app
    user = create_user(app)
    shop = shop_client(app, "pairwise", receiver)
    browser = app.test_client()
    first = RelyingParty(browser, shop).tokens_for(user)
    confirm_subject_change(app, shop.client_id, sector_identifier="corp.example")
    second = RelyingParty(browser, shop).tokens_for(user)
    assert named_by(first) != named_by(second)
    sign_out(browser)
    assert announced(app, receiver, shop) == {named_by(first), named_by(second)}


def test_a_device_grant_is_announced_as_its_id_token_named_it(
    storage_app: Flask, receiver: LogoutReceiver, clock: FrozenClock
) -> None:
    """The device grant's ID token is minted at the poll, which records its values."""
    app = storage_app
    user = create_user(app)
    device = device_for(app, subject_type="pairwise", backchannel_logout_uri=receiver.url("/shop"))
    phone = app.test_client()
    start_session(phone, user)
    codes = device.codes()
    assert answer(phone, codes["user_code"]).status_code == 200
    clock.advance(timedelta(seconds=5))
    polled = device.poll(codes["device_code"])
    assert polled.status_code == 200, polled.text
    confirm_subject_change(app, device.registered.client_id, subject_type="public")
    sign_out(phone)
    assert announced(app, receiver, device.registered) == {named_by(polled.get_json())}


def test_disconnecting_an_app_after_a_subject_change_names_its_id_tokens_values(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """The logout token sent when the user disconnects the app (its access ended, the session at
    idp goes on) names the values of the app's ID token too."""
    app = storage_app
    user = create_user(app)
    shop = shop_client(app, "pairwise", receiver)
    browser = app.test_client()
    tokens = RelyingParty(browser, shop).tokens_for(user)
    confirm_subject_change(app, shop.client_id, subject_type="public")
    page = browser.get("/account/apps")
    form = {"csrf_token": csrf_token(page.text), "confirm": "yes"}
    response = browser.post(f"/account/apps/{shop.client_id}/revoke", data=form)
    assert response.status_code == 302, response.text
    assert announced(app, receiver, shop) == {named_by(tokens)}
    assert browser.get("/account").status_code == 200  # still signed in at idp


def test_a_grant_without_recorded_values_is_announced_by_the_clients_settings(
    storage_app: Flask, receiver: LogoutReceiver
) -> None:
    """A grant older than migration 0019 recorded nothing: its logout token names the values
    the client's settings give at delivery, as before (a public client's: the user's id and
    the session's own ``sid``)."""
    app = storage_app
    user = create_user(app)
    shop = shop_client(app, "pairwise", receiver)
    client = app.test_client()
    RelyingParty(client, shop).tokens_for(user)
    change(app, update(Grant).values(issued_sub=None, issued_sid=None))
    confirm_subject_change(app, shop.client_id, subject_type="public")
    sign_out(client)
    [grant] = rows(app, Grant)
    assert announced(app, receiver, shop) == {(user.id, grant.sid)}
