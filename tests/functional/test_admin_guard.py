"""The admin console's guard rails (item 7), on every route of the ``admin`` blueprint.

The routes are enumerated from the application's URL map, so a page added by anyone later is
covered the moment it is registered: a signed-in non-admin gets 403 on each, an anonymous visitor
is sent to sign in, an admin needs a passkey sign-in of the last ten minutes, a recovery session
gets 403, and every POST needs the CSRF token.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.routing import IntegerConverter, Rule
from werkzeug.test import TestResponse

from idp import create_app
from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import AuditEvent, BrowserSession, Client, User
from idp.models.base import utcnow
from tests.conftest import app_overrides
from tests.functional.test_fallback import (
    STEP,
    enrol_totp,
    password_step,
    path_of,
    recover,
    second_step,
    totp,
)
from tests.support.admin import ConsoleBrowser, age_sign_in, passkey_browser
from tests.support.factories import DEFAULT_PASSWORD, create_client, create_user
from tests.support.flow import start_session
from tests.support.passkey_flow import PasskeyPages, csrf_meta

CSRF_REFUSED = "This form expired or was sent from another page"


def _admin_rules() -> list[Rule]:
    with tempfile.TemporaryDirectory() as instance:
        app = create_app(app_overrides("sqlite://", Path(instance)))
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("admin.")]
    return sorted(rules, key=lambda rule: (rule.endpoint, rule.rule))


ADMIN_RULES = _admin_rules()
#: Every (rule, method) pair, HEAD and OPTIONS included: the guard runs before any of them.
ADMIN_REQUESTS = [(rule, method) for rule in ADMIN_RULES for method in sorted(rule.methods or ())]
ADMIN_POSTS = [rule for rule in ADMIN_RULES if "POST" in (rule.methods or ())]


def _ids(pairs: list[tuple[Rule, str]]) -> list[str]:
    return [f"{method} {rule.rule}" for rule, method in pairs]


def dummy_path(app: Flask, rule: Rule) -> str:
    """The rule's URL with a made-up value for each path parameter."""
    values = {
        name: 1 if isinstance(converter, IntegerConverter) else "dummy"
        for name, converter in rule._converters.items()
    }
    return app.url_map.bind("localhost").build(rule.endpoint, values)


def send(browser: FlaskClient, app: Flask, rule: Rule, method: str, token: str) -> TestResponse:
    """The request with a valid CSRF token (header and form), so that only the guard decides."""
    return browser.open(
        dummy_path(app, rule),
        method=method,
        data={"csrf_token": token} if method == "POST" else None,
        headers={"X-CSRFToken": token},
    )


def test_the_admin_blueprint_has_the_pages_this_file_guards() -> None:
    # A guard test that enumerates nothing would pass vacuously.
    endpoints = {rule.endpoint for rule in ADMIN_RULES}
    assert {"admin.index", "admin.clients", "admin.client", "admin.client_delete"} <= endpoints
    assert ADMIN_POSTS


# -- who is let in --------------------------------------------------------------------------------
@pytest.fixture
def non_admin(app: Flask) -> ConsoleBrowser:
    """A user with a fresh passkey sign-in, so that only the missing admin role keeps them out."""
    return passkey_browser(app, "pat@example.com", admin=False)


@pytest.mark.parametrize(("rule", "method"), ADMIN_REQUESTS, ids=_ids(ADMIN_REQUESTS))
def test_non_admin_gets_403_on_every_admin_route(
    app: Flask, non_admin: ConsoleBrowser, rule: Rule, method: str
) -> None:
    response = send(non_admin.browser, app, rule, method, non_admin.csrf())
    assert response.status_code == 403, (method, rule.rule, response.status_code)
    if method == "GET":  # signed in already: the way on is their account, not a sign-in form
        assert 'href="/account" id="error-way-on">Go to your account<' in response.text


@pytest.mark.parametrize(("rule", "method"), ADMIN_REQUESTS, ids=_ids(ADMIN_REQUESTS))
def test_anonymous_visitor_is_sent_to_sign_in_on_every_admin_route(
    app: Flask, client: FlaskClient, rule: Rule, method: str
) -> None:
    token = csrf_meta(client.get("/login").text)
    response = send(client, app, rule, method, token)
    assert response.status_code == 302, (method, rule.rule, response.status_code)
    assert path_of(response) == "/login"


def test_sign_in_brings_an_anonymous_admin_back_to_the_page_asked_for(
    app: Flask, client: FlaskClient
) -> None:
    location = client.get("/admin/clients?page=2").headers["Location"]
    assert parse_qs(urlsplit(location).query)["next"] == ["/admin/clients?page=2"]


def test_a_query_string_too_long_to_come_back_to_is_not_echoed_into_the_sign_in_redirect(
    client: FlaskClient,
) -> None:
    """The sign-in page follows a ``next`` of at most 2,000 characters (``safe_next``), so the
    redirect to it carries none longer: 100 KB of junk query is not sent back in a header."""
    response = client.get("/admin/clients?junk=" + "A" * 100_000)
    assert response.status_code == 302
    assert path_of(response) == "/login"
    assert len(response.headers["Location"]) < 100
    assert "next" not in parse_qs(urlsplit(response.headers["Location"]).query)


def test_an_admin_with_a_fresh_passkey_sign_in_is_let_in(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    assert admin.browser.get("/admin").status_code == 200
    assert admin.browser.get("/admin/clients").status_code == 200


def test_an_admin_whose_passkey_sign_in_is_nine_minutes_old_is_still_let_in(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    age_sign_in(app, admin.user.id, 9)
    assert admin.browser.get("/admin/clients").status_code == 200


# -- step-up: a passkey sign-in within ten minutes ------------------------------------------------
def assert_sent_to_reauthenticate(response: TestResponse, back_to: str) -> None:
    assert response.status_code == 302
    assert path_of(response) == "/login"
    assert parse_qs(urlsplit(response.headers["Location"]).query)["next"] == [back_to]


def test_admin_passkey_sign_in_older_than_ten_minutes_must_reauthenticate(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    age_sign_in(app, admin.user.id, 11)
    assert_sent_to_reauthenticate(admin.browser.get("/admin/clients"), "/admin/clients")
    # A POST cannot be replayed after signing in: it goes back to the overview, and did nothing.
    target = create_client(app)
    response = admin.post(f"/admin/clients/{target.client_id}/disable")
    assert_sent_to_reauthenticate(response, "/admin")
    with app.app_context():
        client = db.session.get(Client, target.client_id)
        assert client is not None
        assert client.disabled_at is None


def test_step_up_page_says_a_passkey_sign_in_is_needed(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    age_sign_in(app, admin.user.id, 11)
    page = admin.browser.get(admin.browser.get("/admin").headers["Location"])
    assert "needs a passkey sign-in within the last 10 minutes" in page.text


def test_signing_in_again_with_the_passkey_opens_the_console(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    age_sign_in(app, admin.user.id, 11)
    assert admin.browser.get("/admin").status_code == 302
    assert PasskeyPages(admin.browser).sign_in_with_passkey(admin.authenticator).status_code == 200
    assert admin.browser.get("/admin").status_code == 200


def test_admin_signed_in_with_a_password_alone_must_reauthenticate(
    app: Flask, client: FlaskClient
) -> None:
    user = create_user(app, email="root@example.com", admin=True)
    start_session(client, user)
    assert client.get("/account").status_code == 200  # signed in, just not strongly enough
    assert_sent_to_reauthenticate(client.get("/admin"), "/admin")


def _admin_with_totp(app: Flask, clock: FrozenClock) -> tuple[str, str, list[str]]:
    user = create_user(app, email="root@example.com", admin=True)
    browser = app.test_client()
    start_session(browser, user)
    secret, codes = enrol_totp(browser, clock)
    clock.advance(2 * STEP)  # neither the current nor the previous step has been used
    return user.email, secret, codes


def test_admin_signed_in_with_password_and_totp_must_reauthenticate(
    app: Flask, clock: FrozenClock
) -> None:
    """Password + TOTP is multi-factor but phishable: the console wants a passkey (AAL3-style)."""
    email, secret, _ = _admin_with_totp(app, clock)
    browser = app.test_client()
    assert path_of(password_step(browser, email, DEFAULT_PASSWORD)) == "/login/second-step"
    assert path_of(second_step(browser, totp(secret, clock.now()))) == "/account"
    with app.app_context():
        session = db.session.scalars(
            select(BrowserSession).order_by(BrowserSession.created_at.desc())
        ).first()
        assert session is not None
        assert set(session.amr) == {"pwd", "otp", "mfa"}
    assert_sent_to_reauthenticate(browser.get("/admin/clients"), "/admin/clients")


# -- sessions that never get in -------------------------------------------------------------------
def test_recovery_session_of_an_admin_gets_403(app: Flask, clock: FrozenClock) -> None:
    """A backup code opens a restricted session whose only way forward is a new sign-in method;
    it must not open the console."""
    email, _, codes = _admin_with_totp(app, clock)
    browser = app.test_client()
    assert path_of(recover(browser, email, codes[0])) == "/account/recover"
    assert browser.get("/admin").status_code == 403


def test_restricted_flag_alone_keeps_a_fresh_passkey_admin_out(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    with app.app_context():
        db.session.execute(
            update(BrowserSession)
            .where(BrowserSession.user_id == admin.user.id)
            .values(restricted=True)
        )
        db.session.commit()
    assert admin.browser.get("/admin").status_code == 403


def test_disabled_admin_is_not_let_in(app: Flask) -> None:
    """A disabled account's sessions are dead (``SessionService.load``): the console is never
    shown; the visitor is anonymous again and sent to sign in, which a disabled user cannot."""
    admin = passkey_browser(app, "root@example.com")
    with app.app_context():
        db.session.execute(
            update(User).where(User.id == admin.user.id).values(disabled_at=utcnow())
        )
        db.session.commit()
    response = admin.browser.get("/admin/clients")
    assert response.status_code == 302
    assert path_of(response) == "/login"


def test_demoted_admin_gets_403_at_once(app: Flask) -> None:
    admin = passkey_browser(app, "root@example.com")
    assert admin.browser.get("/admin").status_code == 200
    with app.app_context():
        db.session.execute(update(User).where(User.id == admin.user.id).values(is_admin=False))
        db.session.commit()
    assert admin.browser.get("/admin").status_code == 403


# -- CSRF: every admin POST -----------------------------------------------------------------------
@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


@pytest.mark.parametrize("rule", ADMIN_POSTS, ids=[rule.rule for rule in ADMIN_POSTS])
def test_every_admin_post_without_a_csrf_token_is_refused(
    app: Flask, admin: ConsoleBrowser, rule: Rule
) -> None:
    assert app.config.get("WTF_CSRF_ENABLED", True) is True  # as deployed
    path = dummy_path(app, rule)
    for data in ({}, {"csrf_token": "forged"}):
        refused = admin.browser.post(path, data=data)
        assert refused.status_code == 400, (path, data, refused.status_code)
        assert CSRF_REFUSED in refused.text
    # The same request with the page's token gets past the check (so the refusal above was it).
    accepted = admin.post(path)
    assert CSRF_REFUSED not in accepted.text


def test_a_post_refused_for_its_csrf_token_changes_nothing(
    app: Flask, admin: ConsoleBrowser
) -> None:
    target = create_client(app)
    response = admin.browser.post(
        f"/admin/clients/{target.client_id}/delete", data={"confirm": "yes"}
    )
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Client, target.client_id) is not None
        assert not db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "client.deleted")
        ).all()
