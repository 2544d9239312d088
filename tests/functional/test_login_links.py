"""One-time login links: GET never spends, POST spends once, then a new passkey comes first."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from idp.cli import main
from idp.extensions import db
from idp.models import AuditEvent, LoginLink, OutboxMessage, User
from idp.models.base import utcnow
from idp.services.login_links import LoginLinkService
from idp.settings import SettingsError, load_settings
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token


def issue(app: Flask, user: CreatedUser, ttl: int = 900) -> str:
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        _link, secret = LoginLinkService(db.session()).issue(row, ttl=ttl, now=utcnow())
        db.session.commit()
        return secret


def open_and_confirm(client: FlaskClient, secret: str) -> tuple[int, str]:
    page = client.get(f"/login/link/{secret}")
    if page.status_code != 200:
        return page.status_code, ""
    response = client.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(page.text)})
    return response.status_code, response.headers.get("Location", "")


def test_opening_the_link_does_not_spend_it(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """A mail scanner's prefetch (GET) must leave the link usable."""
    secret = issue(app, user)
    for _ in range(3):
        assert client.get(f"/login/link/{secret}").status_code == 200
    with app.app_context():
        assert db.session.scalars(select(LoginLink)).one().consumed_at is None
    assert open_and_confirm(app.test_client(), secret) == (302, "/account/recover")


def test_the_link_forces_a_new_passkey_first(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    assert open_and_confirm(client, issue(app, user))[0] == 302
    assert client.get("/account").headers["Location"] == "/account/recover"
    # and it authorizes no relying party until then
    rp = RelyingParty(client, create_client(app))
    assert rp.authorize().headers["Location"].startswith("/login?")


def test_a_link_works_once(app: Flask, user: CreatedUser) -> None:
    secret = issue(app, user)
    assert open_and_confirm(app.test_client(), secret)[0] == 302
    assert open_and_confirm(app.test_client(), secret)[0] == 400
    with app.app_context():
        failures = db.session.scalars(
            select(AuditEvent).where(
                AuditEvent.kind == "login.link", AuditEvent.outcome == "failure"
            )
        ).all()
        assert failures == []  # the second GET already refused it before any POST


def test_a_confirmation_page_opened_before_the_link_was_used_cannot_spend_it_again(
    app: Flask, user: CreatedUser
) -> None:
    secret = issue(app, user)
    first, second = app.test_client(), app.test_client()
    page_one = first.get(f"/login/link/{secret}").text
    page_two = second.get(f"/login/link/{secret}").text
    assert (
        first.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(page_one)}).status_code
        == 302
    )
    refused = second.post(f"/login/link/{secret}", data={"csrf_token": csrf_token(page_two)})
    assert refused.status_code == 400
    with app.app_context():
        reasons = db.session.scalars(
            select(AuditEvent.details).where(
                AuditEvent.kind == "login.link", AuditEvent.outcome == "failure"
            )
        ).all()
        assert reasons == [{"reason": "link_invalid"}]


def test_an_expired_link_is_refused(app: Flask, user: CreatedUser) -> None:
    secret = issue(app, user)
    with app.app_context():
        db.session.execute(update(LoginLink).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert open_and_confirm(app.test_client(), secret)[0] == 400


def test_a_revoked_link_is_refused(app: Flask, user: CreatedUser) -> None:
    secret = issue(app, user)
    with app.app_context():
        row = db.session.get(User, user.id)
        assert row is not None
        assert LoginLinkService(db.session()).revoke_all(row, utcnow()) == 1
        db.session.commit()
    assert open_and_confirm(app.test_client(), secret)[0] == 400


def test_a_made_up_link_is_refused(app: Flask) -> None:
    assert open_and_confirm(app.test_client(), "not-a-link")[0] == 400


def test_a_disabled_user_cannot_use_a_link(app: Flask, user: CreatedUser) -> None:
    secret = issue(app, user)
    with app.app_context():
        db.session.execute(update(User).values(disabled_at=utcnow()))
        db.session.commit()
    assert open_and_confirm(app.test_client(), secret)[0] == 400


def test_the_link_is_stored_hashed(app: Flask, user: CreatedUser) -> None:
    secret = issue(app, user)
    with app.app_context():
        row = db.session.scalars(select(LoginLink)).one()
        assert secret not in row.id_hash


def test_cli_login_link_prints_a_working_link_and_notifies_the_user(tmp_path: Path) -> None:
    env = {
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(tmp_path),
        "IDP_ISSUER": "http://localhost:5000",
        "IDP_SECRET_KEY": "x" * 40,
        "IDP_LOGIN_LINK_TTL": "600",
    }
    runner = CliRunner(env=env)
    assert runner.invoke(main, ["init"]).exit_code == 0
    assert runner.invoke(main, ["users", "create", "root@example.com", "--admin"]).exit_code == 0
    result = runner.invoke(main, ["login-link", "root@example.com", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["url"].startswith("http://localhost:5000/login/link/")
    refused = runner.invoke(main, ["login-link", "root@example.com", "--ttl", "999999"])
    assert refused.exit_code != 0
    with Session(create_engine(env["IDP_DATABASE_URL"])) as session:
        # Issue 6: the link is emailed (here: the outbox, no SMTP) as well as printed.
        messages = session.scalars(select(OutboxMessage)).all()
        assert [m.kind for m in messages] == ["login_link"]
        assert data["url"] in messages[0].body
        assert data["url"] not in str(messages[0].details)


def test_cli_tells_how_the_first_admin_signs_in(tmp_path: Path) -> None:
    env = {
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(tmp_path),
        "IDP_SECRET_KEY": "x" * 40,
        # A production start without IDP_ADMIN_EMAIL creates no admin: it says how to get one.
        "IDP_PRODUCTION": "true",
    }
    output = CliRunner(env=env).invoke(main, ["init"]).output
    assert "idp login-link you@example.com" in output


def test_login_link_ttl_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="login_link_ttl"):
        load_settings({"login_link_ttl": 86401}, environ={})


def test_passwordless_user_created_without_password(app: Flask) -> None:
    created = create_user(app, email="np@example.com", password="")
    with app.app_context():
        row = db.session.get(User, created.id)
        assert row is not None
        assert row.password_hash is None
