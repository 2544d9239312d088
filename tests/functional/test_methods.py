"""HTTP methods: HEAD and GET change nothing (RFC 9110 9.2.1 safe methods).

Flask answers HEAD with the view of GET, so a view that treats "not GET" as "POST" would run its
POST branch for a HEAD, with no CSRF token (a mail scanner probing a one-time link with HEAD would
spend it). These tests walk the application's whole URL map and send HEAD to every route, from
every kind of browser idp knows (anonymous, signed in, half-way through a sign-in, restricted,
an admin with a fresh step-up), with real secrets in the URLs, and compare every table's rows
before and after each request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import AuditEvent, Base, BrowserSession, OutboxMessage, Passkey, User
from idp.models.base import utcnow
from idp.services.groups import GroupService
from idp.services.health import READINESS_ROW
from idp.services.login_links import LoginLinkService
from tests.functional.test_invites import invite
from tests.functional.test_signup import ask, mailed_link
from tests.support.admin import passkey_browser
from tests.support.apps import app_on
from tests.support.factories import CreatedUser, change, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, query_of, shown_address, start_session

EMAIL_CHANGE_LINK = re.compile(r"http://localhost/account/email/confirm\?token=(\S+)")


@dataclass
class Scene:
    """Every kind of browser, and a real value for every URL variable and secret."""

    app: Flask
    browsers: dict[str, FlaskClient]
    #: endpoint -> the URL variables (and query parameters) to send it
    values: dict[str, dict[str, str]]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def scene_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    # Sign-up on, so that its confirmation link is a live route too.
    instance: Path = tmp_path_factory.mktemp(f"methods-{request.param}")
    with app_on(request.param, instance, signup_enabled=True) as flask_app:
        yield flask_app


def _login_link(app: Flask, user_id: str) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        _link, secret = LoginLinkService(db.session()).issue(user, ttl=900, now=utcnow())
        db.session.commit()
        return secret


def _email_change_token(browser: FlaskClient, app: Flask) -> str:
    """Ask for an email change on the profile page; the token of the link mailed for it."""
    page = browser.get("/account/profile")
    form = {"csrf_token": csrf_token(page.text), "email": "bob.new@example.com"}
    assert browser.post("/account/email", data=form).status_code == 302
    with app.app_context():
        body = db.session.scalars(
            select(OutboxMessage.body).where(OutboxMessage.kind == "email_change_requested")
        ).one()
    match = EMAIL_CHANGE_LINK.search(body)
    assert match, body
    return match.group(1)


@pytest.fixture(scope="module")
def scene(scene_app: Flask) -> Scene:
    app = scene_app
    # An admin signed in with a passkey just now: the console is open (fresh step-up).
    admin = passkey_browser(app, "root@example.com")
    [admin_passkey] = _all(app, Passkey)

    # A full session with a password, and a relying party (third-party: consent applies).
    bob = create_user(app, email="bob@example.com")
    signed_in = app.test_client()
    start_session(signed_in, bob)
    email_token = _email_change_token(signed_in, app)
    third_party = create_client(app, name="Third Party", first_party=False)
    rp = RelyingParty(app.test_client(), create_client(app))
    id_token = rp.tokens_for(bob)["id_token"]
    consent_rp = RelyingParty(signed_in, third_party)
    pending = query_of(consent_rp.authorize().headers["Location"])["request"]

    # Half-way through a sign-in: a password right, the passkey step pending.
    carol = passkey_browser(app, "carol@example.com", admin=False).user
    pending_sign_in = app.test_client()
    page = pending_sign_in.get("/login")
    form = {"csrf_token": csrf_token(page.text), "email": carol.email, "password": carol.password}
    assert shown_address(pending_sign_in.post("/login", data=form)) == "/login/second-step"

    # A restricted session: a login link, spent.
    dave = create_user(app, email="dave@example.com")
    restricted = app.test_client()
    spent = _login_link(app, dave.id)
    confirm_page = restricted.get(f"/login/link/{spent}")
    confirmed = restricted.post(
        f"/login/link/{spent}", data={"csrf_token": csrf_token(confirm_page.text)}
    )
    assert confirmed.headers["Location"] == "/account/recover"

    # Live one-time secrets for the link routes: a login link, an invite, a sign-up link.
    login_secret = _login_link(app, dave.id)
    invite_secret = invite(admin, "erin@example.com")
    assert ask(app.test_client(), "frank@example.com")[0] == 200
    signup_path = mailed_link(app, "frank@example.com")

    bob_row = _one(app, User, User.email == bob.email)
    # A group with a member, for the console's group routes.
    with app.app_context():
        groups = GroupService(db.session())
        groups.add_members(groups.create("staff"), [db.session.get(User, bob_row.id)])
        db.session.commit()
    values: dict[str, dict[str, str]] = {
        "login.login_link": {"secret": login_secret},
        "signup.invite": {"secret": invite_secret},
        "signup.confirm": {"secret": signup_path.rsplit("/", 1)[1]},
        "account.email_confirm": {"token": email_token},
        "oidc.authorize": consent_rp.authorize_params(),
        "oidc.authorize_continue": {"pending_id": pending},
        "oidc.consent": {"request": pending},
        "oidc.logout": {"id_token_hint": id_token},
        "login.login": {"request": pending},
        "login.passkey_prompt": {"then": "/account"},
        "admin.audit_export": {"fmt": "csv"},
        "static": {"filename": "style.css"},
    }
    defaults = {
        "client_id": third_party.client_id,
        "user_id": bob_row.id,
        "credential_id": admin_passkey.credential_id,
        "sid": _session_sid(app, bob),
        "pending_id": pending,
        "secret": login_secret,
        "fmt": "csv",
        "filename": "style.css",
        "name": "staff",
    }
    for rule in app.url_map.iter_rules():
        chosen = values.setdefault(rule.endpoint, {})
        for name in rule.arguments:
            chosen.setdefault(name, defaults[name])
    return Scene(
        app=app,
        browsers={
            "anonymous": app.test_client(),
            "signed in": signed_in,
            "pending sign-in": pending_sign_in,
            "restricted": restricted,
            "admin": admin.browser,
        },
        values=values,
    )


def _all(app: Flask, model: Any) -> list[Any]:
    with app.app_context():
        found = list(db.session.scalars(select(model)))
        db.session.expunge_all()
        return found


def _one(app: Flask, model: Any, *where: Any) -> Any:
    with app.app_context():
        found = db.session.scalars(select(model).where(*where)).one()
        db.session.expunge(found)
        return found


def _session_sid(app: Flask, user: CreatedUser) -> str:
    with app.app_context():
        sid: str = db.session.scalars(
            select(BrowserSession.sid).where(BrowserSession.user_id == user.id)
        ).first()
        return sid


def every_row(app: Flask) -> dict[str, list[str]]:
    """Every row of every table, as text: what a request must leave exactly as it was. One row
    is left out: the readiness probe's heartbeat, the write that ``/readyz`` exists to try
    (docs/operations.md, health endpoints), which holds no user's state."""
    with app.app_context():
        snapshot = {
            table.name: sorted(
                repr(tuple(row))
                for row in db.session.execute(select(table))
                if not (table.name == "maintenance_runs" and row[0] == READINESS_ROW)
            )
            for table in Base.metadata.sorted_tables
        }
        db.session.rollback()
        return snapshot


def routes(scene: Scene) -> list[tuple[str, str]]:
    """(endpoint, URL) for every route of the application, with the scene's values."""
    found = []
    with scene.app.test_request_context():
        for rule in sorted(scene.app.url_map.iter_rules(), key=lambda r: r.rule):
            found.append((rule.endpoint, url_for(rule.endpoint, **scene.values[rule.endpoint])))
    return found


def test_head_to_every_route_changes_no_row_and_writes_no_audit_event(scene: Scene) -> None:
    """RFC 9110 9.2.1 / 9.3.2: HEAD is safe. Every route, every kind of session, no CSRF token,
    real secrets: not one row of any table changes, no audit event is written."""
    # Every session was last used ten minutes ago, as a scanner's probe would find it.
    change(scene.app, update(BrowserSession).values(last_seen_at=utcnow() - timedelta(minutes=10)))
    audit_events = len(_all(scene.app, AuditEvent))
    changed = []
    before = every_row(scene.app)
    for who, browser in scene.browsers.items():
        for endpoint, url in routes(scene):
            browser.head(url)
            after = every_row(scene.app)
            tables = [name for name in before if before[name] != after[name]]
            if tables:
                changed.append(f"HEAD {url} ({who}, {endpoint}) changed {', '.join(tables)}")
            before = after
    assert changed == []
    assert len(_all(scene.app, AuditEvent)) == audit_events


def test_head_to_every_route_is_never_a_server_error(scene: Scene) -> None:
    """A pending sign-in's HEAD /login/second-step was a 500 (the GET branch's page was never
    built): every route answers HEAD without a 5xx, for every kind of session."""
    failures = []
    for who, browser in scene.browsers.items():
        for endpoint, url in routes(scene):
            status = browser.head(url).status_code
            if status >= 500:
                failures.append(f"HEAD {url} ({who}, {endpoint}) answered {status}")
    assert failures == []


ONE_TIME_LINKS = ("login.login_link", "signup.invite", "signup.confirm", "account.email_confirm")


def test_get_of_every_one_time_link_changes_no_row(scene: Scene) -> None:
    """RFC 9110 9.2.1: GET is safe too. A mail scanner that prefetches a login-link, invite,
    sign-up or email-change link (no cookie, no CSRF token) gets the page and spends nothing;
    only the page's POST acts."""
    with scene.app.test_request_context():
        urls = [url_for(endpoint, **scene.values[endpoint]) for endpoint in ONE_TIME_LINKS]
    audit_events = len(_all(scene.app, AuditEvent))
    changed = []
    before = every_row(scene.app)
    for url in urls:
        status = scene.app.test_client().get(url).status_code  # a scanner: no cookie
        after = every_row(scene.app)
        tables = [name for name in before if before[name] != after[name]]
        if tables or status != 200:
            changed.append(f"GET {url} answered {status}, changed {', '.join(tables)}")
        before = after
    assert changed == []
    assert len(_all(scene.app, AuditEvent)) == audit_events


def test_the_scene_is_live(scene: Scene) -> None:
    """The walk above proves something only if its secrets and sessions work: each browser is
    what it claims to be, and each one-time secret still opens its page."""
    get = {who: browser.get for who, browser in scene.browsers.items()}
    assert get["signed in"]("/account").status_code == 200
    assert get["restricted"]("/account").headers["Location"] == "/account/recover"
    assert get["pending sign-in"]("/login/second-step").status_code == 200
    assert get["admin"]("/admin").status_code == 200
    assert get["anonymous"]("/account").status_code == 302
    with scene.app.test_request_context():
        for endpoint in ONE_TIME_LINKS:
            url = url_for(endpoint, **scene.values[endpoint])
            assert get["anonymous"](url).status_code == 200, url
