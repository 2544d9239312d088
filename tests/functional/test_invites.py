"""Invites: an admin's one-time link to a new account. The GET spends nothing,
the POST spends it once; the invitee sets a name, registers a passkey (or a password where the
policy allows one) and is signed in. Expired, reused, revoked, made-up and cross-purpose links
fail, and of parallel redemptions exactly one wins (SQLite and PostgreSQL)."""

from __future__ import annotations

import html
import re
import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AuditEvent, LoginLink, OutboxMessage, Passkey, User
from idp.models.base import utcnow
from idp.services.login_links import LoginLinkService
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.apps import app_on
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import change, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token
from tests.support.live import LiveIdp
from tests.support.passkey_flow import PasskeyPages

ISSUED = re.compile(r'<code id="issued-link"[^>]*>([^<]+)</code>')
LINK_FAILED = "This link does not work"


@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


def invite(console: ConsoleBrowser, email: str, **form: str) -> str:
    """The console's invite form; the secret of the link it shows once."""
    response = console.post("/admin/users/new", {"email": email, "action": "invite", **form})
    assert response.status_code == 200, response.text
    match = ISSUED.search(response.text)
    assert match, response.text
    url = match.group(1)
    assert url.startswith("http://localhost/invite/")
    return url.rsplit("/", 1)[1]


def accept(browser: FlaskClient, secret: str, name: str = "Grace", **extra: str) -> tuple[int, str]:
    page = browser.get(f"/invite/{secret}")
    if page.status_code != 200:
        return page.status_code, ""
    form = {"csrf_token": csrf_token(page.text), "name": name, **extra}
    response = browser.post(f"/invite/{secret}", data=form)
    return response.status_code, response.headers.get("Location", "")


def user_by_email(app: Flask, email: str) -> User:
    with app.app_context():
        row = db.session.scalars(select(User).where(User.email == email)).one()
        db.session.expunge(row)
        return row


def test_an_invite_ends_with_a_passkey_and_a_signed_in_user(
    app: Flask, admin: ConsoleBrowser
) -> None:
    secret = invite(admin, "grace@example.com", name="G. Hopper", ttl="3600")
    invited = user_by_email(app, "grace@example.com")
    assert invited.email_verified is False
    with app.app_context():
        mail = db.session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "invite")).one()
        assert mail.recipient == "grace@example.com"
        assert f"/invite/{secret}" in mail.body
        assert "root@example.com invited you" in mail.body
        issued = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "invite.issued")
        ).one()
        assert (issued.actor_id, issued.subject_id) == (admin.user.id, invited.id)
    browser = app.test_client()
    page = browser.get(f"/invite/{secret}")
    assert 'value="G. Hopper"' in page.text  # the admin's guess, editable
    assert accept(browser, secret, name="  Grace   Hopper ") == (302, "/signup/passkey")
    # A passkey comes first: nothing else opens until then.
    assert browser.get("/account").headers["Location"] == "/account/recover"
    assert "Add a passkey" in browser.get("/signup/passkey").text
    authenticator = SoftAuthenticator()
    registered = PasskeyPages(browser).add_passkey(authenticator)
    assert registered.status_code == 201, registered.text
    assert browser.get("/account").status_code == 200
    joined = user_by_email(app, "grace@example.com")
    # The admin was shown the link: it proves nothing about the mailbox (OIDC Core 5.1).
    assert (joined.name, joined.email_verified, joined.password_hash) == (
        "Grace Hopper", False, None
    )  # fmt: skip
    with app.app_context():
        accepted = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "invite.accepted")
        ).one()
        assert (accepted.outcome, accepted.subject_id) == ("success", invited.id)
        assert accepted.details["issued_by"] == admin.user.id
    # And the passkey signs the new user in from another browser.
    elsewhere = PasskeyPages(app.test_client())
    assert elsewhere.sign_in_with_passkey(authenticator).status_code == 200


def test_the_invited_users_activity_says_they_signed_in_with_a_link_not_a_password(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """The session an invite opens keeps the link's amr ["otp"] after its first passkey
    (RFC 8176: a one-time password); the activity page named that a password and an
    authenticator app, which the invited user never had."""
    secret = invite(admin, "grace@example.com")
    browser = app.test_client()
    assert accept(browser, secret)[0] == 302
    assert PasskeyPages(browser).add_passkey(SoftAuthenticator()).status_code == 201
    rp = RelyingParty(browser, create_client(app, name="Wiki"))
    assert "code" in rp.follow_to_callback(rp.authorize())
    text = html.unescape(browser.get("/account/activity").text)
    assert "You signed in to Wiki with a one-time link or backup code" in text
    assert "with your password" not in text


def test_opening_an_invite_spends_nothing(app: Flask, admin: ConsoleBrowser) -> None:
    """A mail scanner's prefetch (GET) leaves the invite usable."""
    secret = invite(admin, "grace@example.com")
    for _ in range(3):
        assert app.test_client().get(f"/invite/{secret}").status_code == 200
    with app.app_context():
        assert db.session.scalars(
            select(LoginLink.consumed_at).where(LoginLink.purpose == "invite")
        ).one() is None  # fmt: skip
    assert accept(app.test_client(), secret)[0] == 302


def test_an_invite_works_once(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "grace@example.com")
    first, second = app.test_client(), app.test_client()
    page_two = second.get(f"/invite/{secret}").text  # opened before the first use
    assert accept(first, secret)[0] == 302
    assert accept(app.test_client(), secret) == (400, "")
    reused = second.post(f"/invite/{secret}", data={"csrf_token": csrf_token(page_two)})
    assert reused.status_code == 400
    assert LINK_FAILED in reused.text
    with app.app_context():
        outcomes = db.session.scalars(
            select(AuditEvent.outcome)
            .where(AuditEvent.kind == "invite.accepted")
            .order_by(AuditEvent.id)
        ).all()
        assert outcomes == ["success", "failure"]


def test_an_expired_invite_is_refused(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "grace@example.com")
    change(app, update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert accept(app.test_client(), secret) == (400, "")


def test_an_invite_expiring_between_page_and_post_is_refused(
    app: Flask, admin: ConsoleBrowser
) -> None:
    secret = invite(admin, "grace@example.com")
    browser = app.test_client()
    page = browser.get(f"/invite/{secret}")
    change(app, update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = browser.post(f"/invite/{secret}", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 400


def test_a_revoked_invite_is_refused(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "grace@example.com")
    invited = user_by_email(app, "grace@example.com")
    page = admin.browser.get(f"/admin/users/{invited.id}")
    link_id = re.search(r'data-link-id="([^"]+)"', page.text)
    assert link_id, page.text
    response = admin.post(f"/admin/users/{invited.id}/links/revoke", {"link_id": link_id.group(1)})
    assert response.status_code == 303
    assert accept(app.test_client(), secret) == (400, "")
    assert 'data-link-id="' not in admin.browser.get(f"/admin/users/{invited.id}").text


@pytest.mark.parametrize("secret", ["not-an-invite", "x" * 300, "Q" * 43, "%00", "..%2F..%2Fadmin"])
def test_a_made_up_invite_is_refused(app: Flask, secret: str) -> None:
    browser = app.test_client()
    assert browser.get(f"/invite/{secret}").status_code in (400, 404)
    page = browser.get("/login")
    posted = browser.post(f"/invite/{secret}", data={"csrf_token": csrf_token(page.text)})
    assert posted.status_code in (400, 404)
    with app.app_context():
        assert db.session.scalars(select(User)).all() == []


def test_an_invite_is_no_login_link_and_a_login_link_is_no_invite(
    app: Flask, admin: ConsoleBrowser
) -> None:
    secret = invite(admin, "grace@example.com")
    assert app.test_client().get(f"/login/link/{secret}").status_code == 400
    page = app.test_client().get(f"/invite/{secret}")
    browser = app.test_client()
    login_page = browser.get("/login")
    spent = browser.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(login_page.text)})
    assert spent.status_code == 400
    assert page.status_code == 200  # the invite itself still works
    assert accept(app.test_client(), secret)[0] == 302
    # The other way round: an admin's login link for a user is refused at /invite/.
    response = admin.post(f"/admin/users/{admin.user.id}/login-link", {"ttl": "900"})
    match = ISSUED.search(response.text)
    assert match
    login_secret = match.group(1).rsplit("/", 1)[1]
    assert accept(app.test_client(), login_secret) == (400, "")


def test_an_invite_to_a_disabled_account_is_refused(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "grace@example.com")
    with app.app_context():
        db.session.execute(
            update(User).where(User.email == "grace@example.com").values(disabled_at=utcnow())
        )
        db.session.commit()
    assert accept(app.test_client(), secret) == (400, "")


def test_an_invite_to_an_account_set_up_meanwhile_is_refused(
    app: Flask, admin: ConsoleBrowser
) -> None:
    """An invite never adds a way into an account that already has one."""
    secret = invite(admin, "grace@example.com")
    invited = user_by_email(app, "grace@example.com")
    with app.app_context():
        db.session.execute(
            update(User).where(User.id == invited.id).values(password_hash="set elsewhere")
        )
        db.session.commit()
    assert accept(app.test_client(), secret) == (400, "")


def test_an_invite_with_a_password_where_the_policy_allows_it(
    app: Flask, admin: ConsoleBrowser
) -> None:
    secret = invite(admin, "grace@example.com")
    browser = app.test_client()
    assert 'name="password"' in browser.get(f"/invite/{secret}").text
    assert accept(browser, secret, password="a long enough passphrase") == (302, "/account")
    assert browser.get("/account").status_code == 200  # signed in, unrestricted
    joined = user_by_email(app, "grace@example.com")
    assert joined.password_hash is not None
    assert app.extensions["idp"].passwords.verify(joined.password_hash, "a long enough passphrase")


def test_a_weak_password_spends_nothing(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "grace@example.com")
    browser = app.test_client()
    page = browser.get(f"/invite/{secret}")
    form = {"csrf_token": csrf_token(page.text), "name": "Grace", "password": "short"}
    refused = browser.post(f"/invite/{secret}", data=form)
    assert refused.status_code == 400
    assert 'role="alert"' in refused.text
    assert accept(browser, secret)[0] == 302  # the invite still works


@pytest.fixture
def passwordless_app(tmp_path: Path) -> Iterator[Flask]:
    with app_on("sqlite", tmp_path, passwords_allowed=False) as flask_app:
        yield flask_app


def passkey_admin_by_login_link(app: Flask, email: str) -> ConsoleBrowser:
    """A passwordless deployment's admin: a login link, a first passkey, a passkey sign-in."""
    created = create_user(app, email=email, password="", admin=True)
    with app.app_context():
        row = db.session.get(User, created.id)
        assert row is not None
        _link, secret = LoginLinkService(db.session()).issue(row, ttl=900, now=utcnow())
        db.session.commit()
    admin = ConsoleBrowser(browser=app.test_client(), user=created)
    page = admin.browser.get(f"/login/link/{secret}")
    admin.browser.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(page.text)})
    pages = PasskeyPages(admin.browser)
    assert pages.add_passkey(admin.authenticator).status_code == 201
    assert pages.sign_in_with_passkey(admin.authenticator).status_code == 200
    return admin


def test_passwords_off_the_invite_offers_no_password_and_ignores_one(
    passwordless_app: Flask,
) -> None:
    admin = passkey_admin_by_login_link(passwordless_app, "root@example.com")
    secret = invite(admin, "grace@example.com")
    browser = passwordless_app.test_client()
    assert 'name="password"' not in browser.get(f"/invite/{secret}").text
    assert accept(browser, secret, password="a long enough passphrase") == (302, "/signup/passkey")
    assert user_by_email(passwordless_app, "grace@example.com").password_hash is None


def test_a_new_invite_replaces_the_old_one_until_the_account_is_set_up(
    app: Flask, admin: ConsoleBrowser
) -> None:
    old = invite(admin, "grace@example.com")
    invited = user_by_email(app, "grace@example.com")
    response = admin.post(f"/admin/users/{invited.id}/invite", {"ttl": "86400"})
    match = ISSUED.search(response.text)
    assert match
    new = match.group(1).rsplit("/", 1)[1]
    assert accept(app.test_client(), old) == (400, "")
    browser = app.test_client()
    assert accept(browser, new)[0] == 302
    assert PasskeyPages(browser).add_passkey(SoftAuthenticator()).status_code == 201
    again = admin.post(f"/admin/users/{invited.id}/invite", {"ttl": "86400"})
    assert "already set up" in admin.browser.get(again.headers["Location"]).text


@pytest.mark.parametrize("ttl", ["30", "86401", "soon"])
def test_an_invite_lifetime_is_bounded(app: Flask, admin: ConsoleBrowser, ttl: str) -> None:
    response = admin.post(
        "/admin/users/new", {"email": "grace@example.com", "action": "invite", "ttl": ttl}
    )
    if ttl == "soon":  # not a number: the default lifetime
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert "between 1 minute and 24 hours" in response.text
    with app.app_context():
        assert db.session.scalars(select(User).where(User.email == "grace@example.com")).all() == []


def test_an_admin_invite_makes_an_admin(app: Flask, admin: ConsoleBrowser) -> None:
    secret = invite(admin, "second@example.com", admin="on")
    assert user_by_email(app, "second@example.com").is_admin
    browser = app.test_client()
    assert accept(browser, secret)[0] == 302
    # The restricted session opens no admin page before the passkey.
    assert browser.get("/admin/users").status_code in (302, 403)


# -- parallel redemption --------------------------------------------------------------------------
PARALLEL = 12


def test_parallel_redemptions_of_one_invite_exactly_one_wins(live: LiveIdp) -> None:
    email = f"{secrets.token_hex(4)}@example.com"
    invited = live.cli("users", "invite", email, "--name", "Parallel", "--json")
    url = invited["url"]
    assert url.startswith(live.url + "/invite/")
    browsers = [requests.Session() for _ in range(PARALLEL)]
    tokens = []
    for browser in browsers:
        page = browser.get(url, timeout=10)
        assert page.status_code == 200, page.text
        tokens.append(csrf_token(page.text))
    start = threading.Barrier(PARALLEL)

    def redeem(index: int) -> requests.Response:
        start.wait(10)
        return browsers[index].post(
            url, data={"csrf_token": tokens[index], "name": f"Racer {index}"},
            allow_redirects=False, timeout=30,
        )  # fmt: skip

    with ThreadPoolExecutor(PARALLEL) as pool:
        responses = list(pool.map(redeem, range(PARALLEL)))
    winners = [r for r in responses if r.status_code == 302]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert winners[0].headers["Location"].endswith("/signup/passkey")
    assert {r.status_code for r in responses if r not in winners} == {400}
    # The winner's session is the new account's; every loser got none.
    winner = browsers[responses.index(winners[0])]
    assert (
        winner.get(live.url + "/signup/passkey", allow_redirects=False, timeout=10).status_code
        == 200
    )
    shown = live.cli("users", "show", email, "--json")
    assert shown["email_verified"] is False  # the CLI printed the link: nothing proven
    assert len(shown["sessions"]) == 1
    assert shown["name"].startswith("Racer ")


def test_no_passkey_registered_means_no_passkey_row(app: Flask, admin: ConsoleBrowser) -> None:
    """Accepting alone creates no sign-in method: the restricted session must add one."""
    secret = invite(admin, "grace@example.com")
    assert accept(app.test_client(), secret)[0] == 302
    invited = user_by_email(app, "grace@example.com")
    with app.app_context():
        assert db.session.scalars(select(Passkey).where(Passkey.user_id == invited.id)).all() == []
