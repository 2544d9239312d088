"""The admin console's users: list and search, the user page and its actions,
disable (no code, no token anywhere), last-admin protection, the audit trail of every action, and
the ``idp users`` commands sharing the same service."""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session

from idp.cli import main
from idp.extensions import db
from idp.models import (
    AccessToken,
    AuditEvent,
    BackupCode,
    BrowserSession,
    Consent,
    Grant,
    OutboxMessage,
    Passkey,
    TotpCredential,
    User,
)
from idp.models.base import utcnow
from idp.services.backup_codes import BackupCodeService
from idp.services.notifications import Notifier
from idp.services.totp import TotpService
from idp.services.user_admin import LastAdminError, UserAdmin
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import WAIT_TIMEOUT, wait_until
from tests.support.cli import initialised_cli
from tests.support.factories import CreatedUser, change, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import wait_until_waiting_for_turn


@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


def service(app: Flask, actor: str = "test") -> UserAdmin:
    runtime = app.extensions["idp"]
    return UserAdmin(
        db.session(),
        passwords=runtime.passwords,
        notifier=Notifier(db.session()),
        backup_codes=BackupCodeService(db.session(), runtime.backup_code_hasher),
        totp=TotpService(db.session(), runtime.totp_fernet, "idp"),
        actor_id=actor,
    )


def audit_kinds(app: Flask, subject_id: str) -> list[tuple[str, str | None]]:
    with app.app_context():
        rows = db.session.execute(
            select(AuditEvent.kind, AuditEvent.actor_id)
            .where(AuditEvent.subject_id == subject_id, AuditEvent.kind.startswith("admin."))
            .order_by(AuditEvent.id)
        ).all()
        return [(kind, actor) for kind, actor in rows]


def user_row(app: Flask, user_id: str) -> User | None:
    with app.app_context():
        row = db.session.get(User, user_id)
        if row is not None:
            db.session.expunge(row)
        return row


def flashes(page: str) -> list[str]:
    return re.findall(r'role="status">([^<]+)<', page)


# -- list, search, pagination ---------------------------------------------------------------------
def test_users_list_searches_email_and_name_and_pages(app: Flask, admin: ConsoleBrowser) -> None:
    for n in range(30):
        create_user(app, email=f"person{n:02d}@example.com", password="", name=f"Person {n}")
    create_user(app, email="grace@navy.example", password="", name="Grace Hopper")
    first = admin.browser.get("/admin/users")
    assert first.status_code == 200
    assert first.text.count('class="row"') == 32  # one page (the paging: test_admin_pages)
    assert 'rel="next"' not in first.text
    by_name = admin.browser.get("/admin/users?q=HOPPER")
    assert "grace@navy.example" in by_name.text
    assert by_name.text.count('class="row"') == 1
    by_email = admin.browser.get("/admin/users?q=navy.ex")
    assert by_email.text.count('class="row"') == 1
    # LIKE's wildcards are literal characters in a search.
    assert admin.browser.get("/admin/users?q=%25").text.count('class="row"') == 0
    assert admin.browser.get("/admin/users?q=_").text.count('class="row"') == 0
    assert admin.browser.get("/admin/users?cursor=junk").status_code == 400


def test_the_users_list_marks_who_has_no_way_in_yet(app: Flask, admin: ConsoleBrowser) -> None:
    """An invite not yet accepted (or an account created without one) has no way in: the list
    says so, as the user's page does ("not set up yet"), rather than look like every account."""
    invited = create_user(app, email="invited@example.com", password="", name="Invited")
    with_password = create_user(app, email="password@example.com", name="Password")
    passwordless = create_user(app, email="passkey@example.com", name="Passkey")
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(passwordless)
    assert pages.add_passkey(SoftAuthenticator()).status_code == 201
    change(app, update(User).where(User.id == passwordless.id).values(password_hash=None))
    page = admin.browser.get("/admin/users").text
    rows = dict(re.findall(r'data-user-id="([^"]+)">(.*?)</li>', page, re.S))
    assert "not set up yet" in rows[invited.id]
    for set_up in (with_password, passwordless):
        assert "not set up yet" not in rows[set_up.id]


def test_create_without_invite_is_audited_with_actor_and_subject(
    app: Flask, admin: ConsoleBrowser
) -> None:
    response = admin.post(
        "/admin/users/new", {"email": "New@Example.com", "name": "New", "action": "create"}
    )
    assert response.status_code == 302
    with app.app_context():
        created = db.session.scalars(select(User).where(User.email == "new@example.com")).one()
        assert response.headers["Location"] == f"/admin/users/{created.id}"
        assert created.password_hash is None
        assert not created.is_admin
    assert audit_kinds(app, created.id) == [("admin.user_created", admin.user.id)]
    again = admin.post("/admin/users/new", {"email": "new@example.com", "action": "create"})
    assert again.status_code == 400
    assert "already exists" in again.text
    # Not set up yet: the invite is their way in, the rescue login link the lesser button.
    page = admin.browser.get(response.headers["Location"]).text
    assert '<button type="submit" class="primary" id="send-invite-again">' in page
    assert '<button type="submit" id="send-login-link">' in page
    assert 'class="danger" id="delete-user"' in page
    # Nor is the login link "for someone who lost every way in": they never had one.
    assert "lost every way in" not in page
    assert "Until they have set up, a new invite (below) is usually the better choice." in page


# -- the user page and the actions on it ----------------------------------------------------------
def _user_with_everything(app: Flask) -> tuple[CreatedUser, SoftAuthenticator, dict[str, Any]]:
    """A user with a passkey, an authenticator app, backup codes, a session and a connected app."""
    ada = create_user(app, email="ada@example.com")
    rp = RelyingParty(app.test_client(), create_client(app, first_party=False))
    response = rp.sign_in(rp.sign_in_page(), ada)
    while "/consent" not in response.headers["Location"]:
        response = rp.browser.get(response.headers["Location"])
    consent_page = rp.browser.get(response.headers["Location"])
    pending = re.search(r'name="request" value="([^"]+)"', consent_page.text)
    assert pending, consent_page.text
    response = rp.browser.post(
        "/consent",
        data={"csrf_token": csrf_token(consent_page.text), "request": pending.group(1),
              "decision": "allow"},
    )  # fmt: skip
    tokens = rp.exchange(rp.follow_to_callback(response)["code"]).get_json()
    assert "access_token" in tokens, tokens
    browser = app.test_client()
    pages = PasskeyPages(browser)
    pages.sign_in_with_password(ada)
    authenticator = SoftAuthenticator()
    assert pages.add_passkey(authenticator, name="Ada's phone").status_code == 201
    with app.app_context():
        db.session.add(TotpCredential(user_id=ada.id, secret_encrypted="x", confirmed_at=utcnow()))
        db.session.commit()
    return ada, authenticator, {"rp": rp, "tokens": tokens, "browser": browser}


def _credential_id(app: Flask, user_id: str) -> str:
    """The credential ID of the user's one passkey."""
    with app.app_context():
        return db.session.scalars(
            select(Passkey.credential_id).where(Passkey.user_id == user_id)
        ).one()


def test_the_user_page_shows_methods_sessions_apps(app: Flask, admin: ConsoleBrowser) -> None:
    ada, _, extra = _user_with_everything(app)
    page = admin.browser.get(f"/admin/users/{ada.id}")
    assert page.status_code == 200
    assert "Ada&#39;s phone" in page.text
    assert 'id="reset-totp"' in page.text
    assert 'id="void-backup-codes"' in page.text
    assert page.text.count("data-sid=") == 2  # the portal browser and the relying party's
    assert f'data-client-id="{extra["rp"].registered.client_id}"' in page.text
    assert '<button type="submit" class="primary" id="send-login-link">' in page.text
    assert 'id="send-invite-again"' not in page.text  # set up: a login link is the rescue
    assert "For someone who lost every way in" in page.text
    assert admin.browser.get("/admin/users/nobody").status_code == 404


def test_the_user_page_says_what_a_flagged_passkey_means(app: Flask, admin: ConsoleBrowser) -> None:
    """A passkey flagged as a possible clone (WebAuthn L3 6.1.1) is refused at every sign-in:
    the admin rescuing its user is told so and since when, not shown a bare "flagged"."""
    ada, _, _ = _user_with_everything(app)
    credential_id = _credential_id(app, ada.id)
    change(app, update(Passkey).where(Passkey.credential_id == credential_id)
           .values(flagged_at=utcnow()))  # fmt: skip
    page = admin.browser.get(f"/admin/users/{ada.id}")
    row = re.search(rf'data-credential-id="{re.escape(credential_id)}">(.*?)</li>', page.text, re.S)
    assert row is not None
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html.unescape(row.group(1))))
    assert re.search(r"flagged \d{4}-\d\d-\d\d \d\d:\d\d UTC as a possible clone: "
                     r"sign-ins with it are refused", text), text  # fmt: skip


def test_every_admin_action_is_audited_with_actor_and_subject(
    app: Flask, admin: ConsoleBrowser
) -> None:
    ada, _, extra = _user_with_everything(app)
    base = f"/admin/users/{ada.id}"
    credential_id = _credential_id(app, ada.id)
    with app.app_context():
        sid = db.session.scalars(select(BrowserSession.sid).where(
            BrowserSession.user_id == ada.id)).first()  # fmt: skip
    steps: list[tuple[str, dict[str, str]]] = [
        ("/passkeys/revoke", {"credential_id": credential_id, "confirm": "yes"}),
        ("/totp/reset", {}),
        ("/backup-codes/void", {}),
        ("/sessions/revoke", {"sid": sid or ""}),
        ("/sessions/revoke-all", {}),
        ("/consents/revoke", {"client_id": extra["rp"].registered.client_id}),
        ("/promote", {}),
        ("/demote", {}),
        ("/disable", {}),
        ("/enable", {}),
        ("/login-link", {"ttl": "900"}),
    ]
    for path, form in steps:
        response = admin.post(base + path, form)
        assert response.status_code in (200, 303), (path, response.status_code)
        if response.status_code == 303:
            assert (
                "error" not in admin.browser.get(response.headers["Location"]).text.split("<h1>")[0]
            ), path
    with app.app_context():
        link_id = db.session.scalars(
            select(AuditEvent.details).where(AuditEvent.kind == "login_link.issued")
        ).one()["link_id"]
    assert admin.post(base + "/links/revoke", {"link_id": link_id}).status_code == 303
    assert admin.post(base + "/delete", {"confirm": ada.email}).status_code == 303
    kinds = audit_kinds(app, ada.id)
    assert kinds == [
        (kind, admin.user.id)
        for kind in (
            "admin.passkey_revoked", "admin.totp_reset", "admin.backup_codes_voided",
            "admin.session_revoked", "admin.sessions_revoked", "admin.consent_revoked",
            "admin.user_promoted", "admin.user_demoted", "admin.user_disabled",
            "admin.user_enabled", "admin.login_link_revoked", "admin.user_deleted",
        )
    ]  # fmt: skip
    with app.app_context():
        issued = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "login_link.issued")
        ).one()
        assert (issued.actor_id, issued.subject_id) == (admin.user.id, ada.id)


def test_revoking_methods_removes_them_and_tells_the_user(
    app: Flask, admin: ConsoleBrowser
) -> None:
    ada, _, extra = _user_with_everything(app)
    base = f"/admin/users/{ada.id}"
    credential_id = _credential_id(app, ada.id)
    with app.app_context():
        assert db.session.scalar(select(BackupCode.id).where(BackupCode.user_id == ada.id).limit(1))
    admin.post(base + "/passkeys/revoke", {"credential_id": credential_id, "confirm": "yes"})
    admin.post(base + "/totp/reset")
    admin.post(base + "/backup-codes/void")
    admin.post(base + "/consents/revoke", {"client_id": extra["rp"].registered.client_id})
    with app.app_context():
        for model in (Passkey, BackupCode, Consent):
            assert db.session.scalars(select(model).where(model.user_id == ada.id)).all() == []
        assert db.session.get(TotpCredential, ada.id) is None
        assert all(g.revoked_at for g in db.session.scalars(select(Grant)))
        notices = db.session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.kind == "method_removed")
        ).all()
        # The passkey by what idp knows of it, never by the name someone chose for it (a
        # security notice quotes nothing its actor wrote: test_mail.py).
        assert any(n.startswith("A passkey was removed") for n in notices)
        assert not any("Ada's phone" in n for n in notices)
        assert any("authenticator app" in n for n in notices)
    # The disconnected app's tokens no longer work.
    assert extra["rp"].userinfo(extra["tokens"]["access_token"]).status_code == 401


CONFIRM_ACTION = re.compile(r'<form method="post" action="([^"]+)" class="actions">')


def test_removing_a_users_last_way_in_says_so_and_points_to_a_login_link(
    storage_app: Flask,
) -> None:
    """The console asks before it removes a user's passkey (a GET or a bare POST shows the
    confirmation and removes nothing). When the passkey is the user's last way in (no other
    working passkey, no password that signs in), the page says so plainly and points to the
    one-time login link; the admin may still remove it (a lost device), and it is removed."""
    admin = passkey_browser(storage_app, "root@example.com")
    ada = create_user(storage_app, email="ada@example.com")
    pages = PasskeyPages(storage_app.test_client())
    pages.sign_in_with_password(ada)
    assert pages.add_passkey(SoftAuthenticator(), name="Ada's phone").status_code == 201
    credential_id = _credential_id(storage_app, ada.id)
    page = f"/admin/users/{ada.id}/passkeys/revoke"

    beside_a_password = admin.browser.get(page, query_string={"credential_id": credential_id})
    assert beside_a_password.status_code == 200
    assert "Remove the passkey “Ada's phone” of ada@example.com?" in html.unescape(
        beside_a_password.text
    )
    assert "last way in" not in beside_a_password.text
    assert "login link" not in beside_a_password.text

    change(storage_app, update(User).where(User.id == ada.id).values(password_hash=None))
    for asked in (
        admin.browser.get(page, query_string={"credential_id": credential_id}),
        admin.post(page, {"credential_id": credential_id}),
    ):
        assert asked.status_code == 200
        said = html.unescape(asked.text)
        assert "It is their last way in: once it is removed they cannot sign in at all." in said
        assert "send them a one-time login link from their page (Send login link)" in said
        assert _credential_id(storage_app, ada.id) == credential_id
    action = CONFIRM_ACTION.search(asked.text)
    assert action is not None
    removed = admin.post(html.unescape(action.group(1)), {"confirm": "yes"})
    assert removed.status_code == 303
    assert "Passkey removed" in admin.browser.get(removed.headers["Location"]).text
    with storage_app.app_context():
        assert db.session.scalars(select(Passkey).where(Passkey.user_id == ada.id)).all() == []
    assert [kind for kind, _ in audit_kinds(storage_app, ada.id)] == ["admin.passkey_revoked"]
    unknown = admin.browser.get(page, query_string={"credential_id": "nothing"})
    assert unknown.status_code == 404


def test_a_passkey_of_another_user_cannot_be_revoked_through_this_user(
    app: Flask, admin: ConsoleBrowser
) -> None:
    ada, _, _ = _user_with_everything(app)
    bob = create_user(app, email="bob@example.com", password="")
    credential_id = _credential_id(app, ada.id)
    response = admin.post(
        f"/admin/users/{bob.id}/passkeys/revoke", {"credential_id": credential_id, "confirm": "yes"}
    )
    assert response.status_code == 303
    assert "does not belong" in admin.browser.get(response.headers["Location"]).text
    with app.app_context():
        assert db.session.scalars(select(Passkey.user_id).where(Passkey.user_id == ada.id)).one()


def test_revoking_sessions_signs_the_user_out(app: Flask, admin: ConsoleBrowser) -> None:
    ada, _, extra = _user_with_everything(app)
    portal = extra["browser"]
    assert portal.get("/account").status_code == 200
    admin.post(f"/admin/users/{ada.id}/sessions/revoke-all")
    assert portal.get("/account").headers["Location"].startswith("/login")


def test_delete_needs_the_email_typed_and_removes_everything(
    app: Flask, admin: ConsoleBrowser
) -> None:
    ada, _, _ = _user_with_everything(app)
    refused = admin.post(f"/admin/users/{ada.id}/delete", {"confirm": "yes"})
    assert "type its email address" in admin.browser.get(refused.headers["Location"]).text
    assert user_row(app, ada.id) is not None
    deleted = admin.post(f"/admin/users/{ada.id}/delete", {"confirm": " ADA@example.com "})
    assert deleted.headers["Location"] == "/admin/users"
    with app.app_context():
        assert db.session.get(User, ada.id) is None
        for model in (Passkey, BackupCode, Grant, BrowserSession, Consent):
            assert db.session.scalars(select(model).where(model.user_id == ada.id)).all() == []
        assert (
            db.session.scalars(select(AccessToken).where(AccessToken.user_id == ada.id)).all() == []
        )


# -- disable: no code and no token ----------------------------------------------------------------
DISABLE_WAYS = ["admin_console", "flag_only"]


def _disable(app: Flask, admin: ConsoleBrowser, user_id: str, how: str) -> None:
    """Through the console (sessions and tokens revoked at once), or only the flag set: every
    endpoint must refuse a disabled user on its own, whatever was revoked."""
    if how == "admin_console":
        response = admin.post(f"/admin/users/{user_id}/disable")
        assert response.status_code == 303
    else:
        with app.app_context():
            db.session.execute(update(User).where(User.id == user_id).values(disabled_at=utcnow()))
            db.session.commit()
    assert user_row(app, user_id).disabled_at is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("how", DISABLE_WAYS)
def test_disabled_user_gets_no_authorization_code(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, user: CreatedUser, how: str
) -> None:
    start_session(rp.browser, user)
    assert "code=" in rp.authorize().headers["Location"]  # signed in: a code at once
    _disable(app, admin, user.id, how)
    address = rp.sign_in_page()  # the sign-in page again
    assert address.startswith("/login?")
    signed_in = rp.sign_in(address, user)
    assert signed_in.status_code == 401  # and signing in again is refused


@pytest.mark.parametrize("how", DISABLE_WAYS)
def test_disabled_user_code_exchange_is_refused(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, user: CreatedUser, how: str
) -> None:
    code = rp.obtain_code(user)["code"]
    _disable(app, admin, user.id, how)
    response = rp.exchange(code)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


@pytest.mark.parametrize("how", DISABLE_WAYS)
def test_disabled_user_refresh_is_refused(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, tokens: dict[str, Any],
    user: CreatedUser, how: str,
) -> None:  # fmt: skip
    _disable(app, admin, user.id, how)
    response = rp.refresh(tokens["refresh_token"])
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


@pytest.mark.parametrize("how", DISABLE_WAYS)
def test_disabled_user_userinfo_is_refused(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, tokens: dict[str, Any],
    user: CreatedUser, how: str,
) -> None:  # fmt: skip
    assert rp.userinfo(tokens["access_token"]).status_code == 200
    _disable(app, admin, user.id, how)
    assert rp.userinfo(tokens["access_token"]).status_code == 401


@pytest.mark.parametrize("how", DISABLE_WAYS)
@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
def test_disabled_user_tokens_introspect_inactive(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, tokens: dict[str, Any],
    user: CreatedUser, how: str, kind: str,
) -> None:  # fmt: skip
    def introspect() -> dict[str, Any]:
        registered = rp.registered
        raw = f"{registered.client_id}:{registered.client_secret}".encode()
        response = rp.browser.post(
            "/introspect", data={"token": tokens[kind]},
            headers={"Authorization": "Basic " + base64.b64encode(raw).decode()},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.get_json()
        return body

    assert introspect()["active"] is True
    _disable(app, admin, user.id, how)
    assert introspect() == {"active": False}


def test_disable_revokes_sessions_grants_and_links_at_once(
    app: Flask, admin: ConsoleBrowser, rp: RelyingParty, tokens: dict[str, Any], user: CreatedUser
) -> None:
    admin.post(f"/admin/users/{user.id}/login-link", {"ttl": "900"})
    _disable(app, admin, user.id, "admin_console")
    with app.app_context():
        assert all(s.revoked_at for s in db.session.scalars(
            select(BrowserSession).where(BrowserSession.user_id == user.id)))  # fmt: skip
        assert all(g.revoked_reason == "user_disabled" for g in db.session.scalars(select(Grant)))
        assert all(t.revoked_at for t in db.session.scalars(
            select(AccessToken).where(AccessToken.user_id == user.id)))  # fmt: skip
        row = db.session.get(User, user.id)
        assert row is not None
        from idp.services.login_links import LoginLinkService

        assert LoginLinkService(db.session()).live_links(row, utcnow()) == []
    # Enabling gives back the account, not the revoked tokens.
    admin.post(f"/admin/users/{user.id}/enable")
    assert rp.refresh(tokens["refresh_token"]).status_code == 400
    assert RelyingParty(app.test_client(), rp.registered).tokens_for(user)["access_token"]


# -- last-admin protection ------------------------------------------------------------------------
def assert_refusal_audited(app: Flask, actor_id: str, subject_id: str, action: str) -> None:
    with app.app_context():
        refused = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "admin.action_refused")
        ).one()
        assert (refused.outcome, refused.actor_id, refused.subject_id) == (
            "failure", actor_id, subject_id
        )  # fmt: skip
        assert (refused.details["action"], refused.details["reason"]) == (action, "last_admin")


def test_the_last_active_admin_cannot_be_disabled(app: Flask, admin: ConsoleBrowser) -> None:
    response = admin.post(f"/admin/users/{admin.user.id}/disable")
    assert "last active admin" in admin.browser.get(response.headers["Location"]).text
    assert user_row(app, admin.user.id).disabled_at is None  # type: ignore[union-attr]
    assert_refusal_audited(app, admin.user.id, admin.user.id, "disable")


def test_the_last_active_admin_cannot_be_demoted(app: Flask, admin: ConsoleBrowser) -> None:
    response = admin.post(f"/admin/users/{admin.user.id}/demote")
    assert "last active admin" in admin.browser.get(response.headers["Location"]).text
    assert user_row(app, admin.user.id).is_admin  # type: ignore[union-attr]
    assert_refusal_audited(app, admin.user.id, admin.user.id, "demote")


def test_the_last_active_admin_cannot_be_deleted(app: Flask, admin: ConsoleBrowser) -> None:
    response = admin.post(f"/admin/users/{admin.user.id}/delete", {"confirm": admin.user.email})
    assert "last active admin" in admin.browser.get(response.headers["Location"]).text
    assert user_row(app, admin.user.id) is not None
    assert_refusal_audited(app, admin.user.id, admin.user.id, "delete")


def test_a_disabled_admin_does_not_count_as_another_admin(
    app: Flask, admin: ConsoleBrowser
) -> None:
    other = create_user(app, email="other-admin@example.com", admin=True, password="")
    assert admin.post(f"/admin/users/{other.id}/disable").status_code == 303
    assert user_row(app, other.id).disabled_at is not None  # type: ignore[union-attr]
    response = admin.post(f"/admin/users/{admin.user.id}/demote")
    assert "last active admin" in admin.browser.get(response.headers["Location"]).text


def test_with_a_second_admin_the_first_can_step_down(app: Flask, admin: ConsoleBrowser) -> None:
    other = create_user(app, email="other-admin@example.com", password="")
    assert admin.post(f"/admin/users/{other.id}/promote").status_code == 303
    assert user_row(app, other.id).is_admin  # type: ignore[union-attr]
    admin.post(f"/admin/users/{admin.user.id}/demote")
    assert not user_row(app, admin.user.id).is_admin  # type: ignore[union-attr]
    # No longer an admin: the console is closed to this browser.
    assert admin.browser.get("/admin/users").status_code == 403


def test_a_regular_user_can_be_disabled_when_no_admin_exists(app: Flask) -> None:
    ada = create_user(app, email="ada@example.com")
    with app.app_context():
        row = db.session.get(User, ada.id)
        assert row is not None
        service(app).disable(row, utcnow())
        db.session.commit()
    assert user_row(app, ada.id).disabled_at is not None  # type: ignore[union-attr]


def _wait_until_waiting_on_the_first(app: Flask, thread: threading.Thread,
                                     outcome: dict[str, Any]) -> None:  # fmt: skip
    """Until the second transaction is seen waiting for the first's lock, as a state: on SQLite
    its writer turn (idp.sqlite_writers, read from its stack), on PostgreSQL its backend's
    ``wait_event_type`` (pg_stat_activity). Fails if it finished or failed without waiting."""
    with app.app_context():
        dialect = db.engine.dialect.name
    if dialect == "sqlite":
        wait_until_waiting_for_turn(thread, outcome)
        return
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")

    def waiting() -> bool:
        assert "error" not in outcome, outcome
        assert thread.is_alive(), f"the second transaction did not wait: {outcome}"
        if "pid" not in outcome:
            return False
        with app.app_context(), db.engine.connect() as connection:
            return connection.scalar(query, {"pid": outcome["pid"]}) == "Lock"

    wait_until(waiting, "the second transaction waits on the first's lock")


@pytest.mark.parametrize("action", ["disable", "demote", "delete"])
def test_two_admins_removing_each_other_at_once_leave_one_active_admin(
    storage_app: Flask, action: str
) -> None:
    """Real concurrent transactions, ordered by events the test controls, never by a sleep: the
    first removes its admin and is held before its commit; the second starts and is seen waiting
    on the first's lock (the active admins' rows, ``UserAdmin._locking_admins``; SQLite's write
    turn); then the first commits and the second, counting after it, is refused (SQLite and
    PostgreSQL). Without the lock the second never waits, counts two admins and succeeds."""
    first = create_user(storage_app, email="a@example.com", admin=True, password="")
    second = create_user(storage_app, email="b@example.com", admin=True, password="")
    changed, commit_first = threading.Event(), threading.Event()
    outcomes: dict[str, dict[str, Any]] = {first.id: {}, second.id: {}}

    def act(user_id: str, hold: bool) -> None:
        outcome = outcomes[user_id]
        with storage_app.app_context():
            try:
                if db.session.get_bind().dialect.name == "postgresql":
                    raw: Any = db.session.connection().connection.dbapi_connection
                    outcome["pid"] = raw.info.backend_pid
                row = db.session.get(User, user_id)
                assert row is not None
                admin_service = service(storage_app)
                getattr(admin_service, action)(row, utcnow())
                if hold:
                    changed.set()
                    assert commit_first.wait(WAIT_TIMEOUT), "the test never let the first commit"
                db.session.commit()
                outcome["result"] = "done"
            except LastAdminError:
                db.session.rollback()
                outcome["result"] = "refused"
            except Exception as error:  # reported in the test's thread
                outcome["error"] = error
            finally:
                changed.set()

    one = threading.Thread(target=act, args=(first.id, True))
    two = threading.Thread(target=act, args=(second.id, False))
    one.start()
    try:
        assert changed.wait(WAIT_TIMEOUT), "the first transaction never made its change"
        assert "error" not in outcomes[first.id], outcomes[first.id]
        two.start()
        _wait_until_waiting_on_the_first(storage_app, two, outcomes[second.id])
    finally:
        commit_first.set()
        one.join(WAIT_TIMEOUT)
        if two.ident is not None:
            two.join(WAIT_TIMEOUT)
    results = {user_id: outcome.get("result", outcome.get("error"))
               for user_id, outcome in outcomes.items()}  # fmt: skip
    assert results == {first.id: "done", second.id: "refused"}
    with storage_app.app_context():
        active = db.session.scalars(
            select(User.id).where(User.is_admin.is_(True), User.disabled_at.is_(None))
        ).all()
        assert active == [second.id]


# -- the command line shares the service ----------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    # IDP_PRODUCTION: no development admin is created by init.
    runner = initialised_cli(tmp_path, IDP_ISSUER="http://localhost:5000", IDP_PRODUCTION="true")
    return dict(runner.env)


def cli(env: dict[str, str], *args: str, ok: bool = True, input: str | None = None) -> Any:
    result = CliRunner(env=env).invoke(main, list(args), input=input)
    assert (result.exit_code == 0) is ok, result.output
    if ok and "--json" in args:
        return json.loads(result.output)
    return result.output


def test_cli_users_commands(cli_env: dict[str, str]) -> None:
    root = cli(cli_env, "users", "create", "root@example.com", "--admin", "--json")
    assert root["admin"] is True
    assert root["disabled"] is False
    cli(cli_env, "users", "create", "ada@example.com", "--name", "Ada Lovelace", "--json")
    invited = cli(cli_env, "users", "invite", "bob@example.com", "--name", "Bob", "--json")
    assert invited["url"].startswith("http://localhost:5000/invite/")
    listed = cli(cli_env, "users", "list", "--json")
    # By email address (read in keyset batches), as the console's list.
    assert [u["email"] for u in listed] == ["ada@example.com", "bob@example.com",
                                           "root@example.com"]  # fmt: skip
    assert [u["email"] for u in cli(cli_env, "users", "list", "--search", "LOVE", "--json")] == [
        "ada@example.com"
    ]
    shown = cli(cli_env, "users", "show", "bob@example.com", "--json")
    assert shown["passkeys"] == []
    assert shown["links"][0]["purpose"] == "invite"
    assert cli(cli_env, "users", "disable", "ada@example.com", "--json")["disabled"] is True
    assert cli(cli_env, "users", "enable", "ada@example.com", "--json")["disabled"] is False
    assert cli(cli_env, "users", "promote", "ada@example.com", "--json")["admin"] is True
    assert cli(cli_env, "users", "demote", "root@example.com", "--json")["admin"] is False
    assert "last active admin" in cli(cli_env, "users", "demote", "ada@example.com", ok=False)
    assert "last active admin" in cli(cli_env, "users", "disable", "ada@example.com", ok=False)
    assert "last active admin" in cli(
        cli_env, "users", "delete", "ada@example.com", "--yes", ok=False
    )
    cli(cli_env, "users", "delete", "bob@example.com", input="n\n", ok=False)  # not confirmed
    assert "deleted bob@example.com" in cli(cli_env, "users", "delete", "bob@example.com", "--yes")
    assert "no user nobody@example.com" in cli(
        cli_env, "users", "show", "nobody@example.com", ok=False
    )
    with Session(create_engine(cli_env["IDP_DATABASE_URL"])) as session:
        kinds = session.execute(
            select(AuditEvent.kind, AuditEvent.actor_id)
            .where(AuditEvent.kind.startswith("admin."))
            .order_by(AuditEvent.id)
        ).all()
        assert {actor for _, actor in kinds} == {"cli"}
        assert [kind for kind, _ in kinds] == [
            "admin.user_created", "admin.user_created", "admin.user_created",
            "admin.user_disabled", "admin.user_enabled", "admin.user_promoted",
            "admin.user_demoted", "admin.action_refused", "admin.action_refused",
            "admin.action_refused", "admin.user_deleted",
        ]  # fmt: skip
        emails = sorted(session.scalars(select(User.email)))
        assert emails == ["ada@example.com", "root@example.com"]


def test_a_non_admin_sees_no_user_pages(app: Flask, user: CreatedUser, client: FlaskClient) -> None:
    start_session(client, user)
    assert client.get("/admin/users").status_code == 403
    assert client.get(f"/admin/users/{user.id}").status_code == 403
