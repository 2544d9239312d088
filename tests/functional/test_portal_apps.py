"""Connected apps lists every app that can act for the user: the ones they consented to, and the
ones holding a live refresh token, first-party apps (no consent screen) included; the user and
the admin can disconnect either, audited (docs/security.md, "Sessions")."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from idp.extensions import db
from idp.models import AuditEvent, User
from idp.models.base import utcnow
from idp.services import portal
from tests.functional.test_round_trips import statements
from tests.support.admin import passkey_browser
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, start_session


def _phone_app(app: Flask, user: CreatedUser, name: str = "Phone App") -> dict[str, Any]:
    """A first-party app signed in on a phone with ``offline_access``: its tokens."""
    rp = RelyingParty(app.test_client(), create_client(app, name=name))
    tokens = rp.tokens_for(user)
    assert "refresh_token" in tokens
    return {"rp": rp, **tokens}


def _events(app: Flask, kind: str) -> list[AuditEvent]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)))
        db.session.expunge_all()
        return found


def test_a_first_party_app_with_offline_access_is_listed_and_the_user_can_end_it(
    storage_app: Flask,
) -> None:
    """A lost phone: its first-party app asked no consent and keeps its refresh token past "sign
    out everywhere"; Connected apps lists it, and Disconnect ends it, audited."""
    user = create_user(storage_app)
    phone = _phone_app(storage_app, user)
    portal_browser: FlaskClient = storage_app.test_client()
    start_session(portal_browser, user)
    page = portal_browser.get("/account")
    portal_browser.post("/account/sessions/revoke-others",
                        data={"csrf_token": csrf_token(page.text)})  # fmt: skip
    rotated = phone["rp"].refresh(phone["refresh_token"])
    assert rotated.status_code == 200  # offline access outlives the sessions (OIDC Core 11)

    apps = portal_browser.get("/account/apps").text
    assert "Phone App" in apps
    assert "no consent needed" in apps
    client_id = phone["rp"].registered.client_id
    asked = portal_browser.post(f"/account/apps/{client_id}/revoke",
                                data={"csrf_token": csrf_token(apps)})  # fmt: skip
    assert "Disconnect Phone App?" in asked.text
    # It asked no consent and would ask nothing of a browser signed in here (OIDC Core 3.1.2.4).
    assert "gets access again without asking you" in asked.text
    done = portal_browser.post(f"/account/apps/{client_id}/revoke",
                               data={"csrf_token": csrf_token(apps), "confirm": "yes"})  # fmt: skip
    assert done.status_code == 302
    refused = phone["rp"].refresh(rotated.get_json()["refresh_token"])
    assert refused.get_json()["error"] == "invalid_grant"
    assert phone["rp"].userinfo(rotated.get_json()["access_token"]).status_code == 401
    assert "Phone App" not in portal_browser.get("/account/apps").text
    [disconnected] = _events(storage_app, "consent.revoked")
    assert (disconnected.subject_id, disconnected.client_id) == (user.id, client_id)
    assert disconnected.details["consent"] is False


def test_the_admin_sees_and_disconnects_a_first_party_app_with_offline_access(
    storage_app: Flask,
) -> None:
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    phone = _phone_app(storage_app, user)
    client_id = phone["rp"].registered.client_id
    page = admin.browser.get(f"/admin/users/{user.id}").text
    assert "Phone App" in page
    assert f'data-client-id="{client_id}"' in page
    answer = admin.post(f"/admin/users/{user.id}/consents/revoke", {"client_id": client_id})
    assert answer.status_code == 303
    assert phone["rp"].refresh(phone["refresh_token"]).get_json()["error"] == "invalid_grant"
    [disconnected] = _events(storage_app, "admin.consent_revoked")
    assert (disconnected.actor_id, disconnected.subject_id) == (admin.user.id, user.id)


def test_connected_apps_are_read_in_two_statements_whatever_their_number(
    storage_app: Flask,
) -> None:
    """Consented third-party apps and first-party apps holding offline grants: one statement
    lists them, one more reads the scopes of those without a consent."""
    user = create_user(storage_app)
    for n in range(3):
        _phone_app(storage_app, user, name=f"Phone App {n}")
    with storage_app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        with statements(storage_app) as sent:
            apps = portal.connected_apps(db.session(), row, utcnow())
        assert [a.client.name for a in apps] == ["Phone App 0", "Phone App 1", "Phone App 2"]
        assert all(a.offline and not a.consented for a in apps)
        assert {"openid", "offline_access"} <= set(apps[0].scopes)
        assert len(sent) <= 2, sent


def _consented_app(app: Flask, user: CreatedUser) -> tuple[RelyingParty, dict[str, Any]]:
    """A third-party app the user allowed, signed in another browser, without offline access."""
    rp = RelyingParty(app.test_client(), create_client(app, first_party=False, name="Third Party"))
    response = rp.sign_in(rp.sign_in_page(scope="openid profile"), user)
    while "/consent" not in response.headers["Location"]:
        response = rp.browser.get(response.headers["Location"])
    page = rp.browser.get(response.headers["Location"]).text
    pending = re.search(r'name="request" value="([^"]+)"', page)
    assert pending
    allow = {"csrf_token": csrf_token(page), "request": pending.group(1), "decision": "allow"}
    callback = rp.follow_to_callback(rp.browser.post("/consent", data=allow))
    tokens: dict[str, Any] = rp.exchange(callback["code"]).get_json()
    assert "access_token" in tokens, tokens
    return rp, tokens


def test_a_consented_app_whose_grant_was_taken_back_is_listed_as_holding_no_access(
    storage_app: Flask,
) -> None:
    """A third-party app's grant taken back (its session ended: "sign out everywhere else") left
    the app under Connected apps as if it could still act for the user ("It can see your
    name"). Its remembered consent stays listed, to be withdrawn (it lets the app sign the user
    in again without asking, OIDC Core 3.1.2.4), but the page says that it holds no access now,
    and its Disconnect that it forgets the consent, with no token to stop; once withdrawn the
    app is gone from the page (SQLite and PostgreSQL, the portal's own pages)."""
    user = create_user(storage_app)
    rp, tokens = _consented_app(storage_app, user)
    portal_browser: FlaskClient = storage_app.test_client()
    start_session(portal_browser, user)
    live = portal_browser.get("/account/apps").text
    assert "Third Party" in live
    assert "It can" in live
    assert "No access now" not in live
    page = portal_browser.get("/account")
    portal_browser.post("/account/sessions/revoke-others",
                        data={"csrf_token": csrf_token(page.text)})  # fmt: skip
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    apps = portal_browser.get("/account/apps").text
    assert "Third Party" in apps
    assert "No access now" in apps
    assert "It can" not in apps
    client_id = rp.registered.client_id
    asked = portal_browser.post(f"/account/apps/{client_id}/revoke",
                                data={"csrf_token": csrf_token(apps)})  # fmt: skip
    assert "holds no access to your account now" in asked.text
    assert "its tokens stop working now" not in asked.text
    done = portal_browser.post(f"/account/apps/{client_id}/revoke",
                               data={"csrf_token": csrf_token(apps), "confirm": "yes"})  # fmt: skip
    assert done.status_code == 302
    assert "Third Party" not in portal_browser.get("/account/apps").text
