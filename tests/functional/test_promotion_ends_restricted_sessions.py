"""A promotion and the restricted sessions a member's links already opened (docs/api.md, Tokens;
docs/admins.md, "Rescuing a user with a one-time login link"). A token that may not make admins
issues a member a rescue link or an invite; its holder spends it, which opens a restricted session
whose only way forward is adding a passkey. Promoting the member ends their unspent links, and
must end that session too: else its holder adds a passkey to the admin the member became, then
signs in to the console with it, an admin's account from a token that may not make one. On
SQLite and PostgreSQL."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from idp.models import AuditEvent, BrowserSession, Passkey
from tests.functional.test_api import Api, issue
from tests.functional.test_invites import accept
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import create_user, rows
from tests.support.flow import csrf_token
from tests.support.passkey_flow import PasskeyPages


def _spend_rescue_link(browser: FlaskClient, url: str) -> int:
    secret = url.rsplit("/", 1)[1]
    page = browser.get(f"/login/link/{secret}")
    assert page.status_code == 200, page.text
    form = {"csrf_token": csrf_token(page.text)}
    return browser.post(f"/login/link/{secret}", data=form).status_code


def _promoted_events(app: Flask) -> list[AuditEvent]:
    return rows(app, AuditEvent, AuditEvent.kind == "admin.user_promoted")


def _no_passkey_added(app: Flask, holder: PasskeyPages, user_id: str) -> None:
    """The holder's session is gone: adding a passkey is refused and stores none."""
    options = holder.post_json("/account/passkeys/options", {})
    if options.status_code == 200:
        ceremony = options.get_json()
        credential = SoftAuthenticator().create(ceremony["publicKey"])
        added = holder.register(ceremony["challenge_id"], credential)
        assert added.status_code != 201, added.text
    assert rows(app, Passkey, Passkey.user_id == user_id) == []
    assert holder.browser.get("/account").status_code == 302  # to sign in: no session


def test_a_promotion_ends_the_restricted_session_a_rescue_link_opened(storage_app: Flask) -> None:
    create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))
    issued = helpdesk.call("POST", f"/users/{member.id}/login-links")
    assert issued.status_code == 201, issued.text
    holder = PasskeyPages(storage_app.test_client())
    assert _spend_rescue_link(holder.browser, issued.get_json()["url"]) == 302
    assert holder.browser.get("/account/recover").status_code == 200  # may add a passkey

    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    promoted = ops.call("PATCH", f"/users/{member.id}", {"admin": True})
    assert promoted.get_json()["admin"] is True, promoted.text

    _no_passkey_added(storage_app, holder, member.id)
    [event] = _promoted_events(storage_app)
    assert event.details["restricted_sessions_ended"] == 1
    [ended] = rows(storage_app, BrowserSession, BrowserSession.user_id == member.id)
    assert ended.restricted
    assert ended.revoked_at is not None


def test_a_console_promotion_ends_the_restricted_session_an_invite_opened(
    storage_app: Flask,
) -> None:
    """The invite's URL is in the answer of the users:write token that created the account; its
    holder accepts it, then an admin promotes the account in the console before it is set up."""
    console = passkey_browser(storage_app, "root@example.com")
    users = Api(storage_app, issue(storage_app, "users:write", name="users"))
    created = users.call("POST", "/users", {"email": "grace@example.com"})
    assert created.status_code == 201, created.text
    body = created.get_json()
    holder = PasskeyPages(storage_app.test_client())
    assert accept(holder.browser, body["invite"]["url"].rsplit("/", 1)[1]) == (
        302, "/signup/passkey"
    )  # fmt: skip

    response = console.post(f"/admin/users/{body['id']}/promote", {})
    assert response.status_code == 303, response.text

    _no_passkey_added(storage_app, holder, body["id"])
    [event] = _promoted_events(storage_app)
    assert event.details["restricted_sessions_ended"] == 1


def test_a_promotion_leaves_the_members_full_sessions(storage_app: Flask) -> None:
    """Only what a link opened ends: the member's own passkey sign-in stays signed in."""
    create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    own = PasskeyPages(storage_app.test_client())
    own.sign_in_with_password(member)
    assert own.add_passkey(SoftAuthenticator()).status_code == 201
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    assert ops.call("PATCH", f"/users/{member.id}", {"admin": True}).status_code == 200
    assert own.browser.get("/account").status_code == 200
    [event] = _promoted_events(storage_app)
    assert event.details["restricted_sessions_ended"] == 0
