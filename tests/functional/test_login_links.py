"""One-time login links: GET never spends, POST spends once, then a new passkey comes first."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session

from idp import load_checked_settings
from idp.cli import main
from idp.extensions import db
from idp.models import (
    AuditEvent,
    BrowserSession,
    Consent,
    LoginLink,
    OutboxMessage,
    PendingAuthorization,
    TotpCredential,
    User,
)
from idp.models.base import utcnow
from idp.services.login_links import LoginLinkService
from idp.settings import SettingsError
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.cli import initialised_cli
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, query_of, start_session
from tests.support.passkey_flow import csrf_meta


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
    assert rp.sign_in_page().startswith("/login?")


def test_after_a_link_only_a_passkey_ends_the_restriction(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """The user must register a new passkey before anything else; an authenticator app
    (which a backup-code recovery may add) is not offered and cannot be set up."""
    assert open_and_confirm(client, issue(app, user))[0] == 302
    page = client.get("/account/recover")
    assert "add a passkey" in page.text
    assert "/account/totp" not in page.text
    assert client.get("/account/totp").headers["Location"] == "/account/recover"
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "code": "123456"}
    assert client.post("/account/totp", data=form).headers["Location"] == "/account/recover"
    with app.app_context():
        assert db.session.scalars(select(TotpCredential)).all() == []


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
    runner = initialised_cli(tmp_path, IDP_ISSUER="http://localhost:5000", IDP_LOGIN_LINK_TTL="600")
    assert runner.invoke(main, ["users", "create", "root@example.com", "--admin"]).exit_code == 0
    result = runner.invoke(main, ["login-link", "root@example.com", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["url"].startswith("http://localhost:5000/login/link/")
    refused = runner.invoke(main, ["login-link", "root@example.com", "--ttl", "999999"])
    assert refused.exit_code != 0
    with Session(create_engine(runner.env["IDP_DATABASE_URL"])) as session:
        # The link is emailed (here: the outbox, no SMTP) as well as printed.
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
        load_checked_settings({"login_link_ttl": 86401}, environ={})


def test_passwordless_user_created_without_password(app: Flask) -> None:
    created = create_user(app, email="np@example.com", password="")
    with app.app_context():
        row = db.session.get(User, created.id)
        assert row is not None
        assert row.password_hash is None


# -- "Send login link" on the user page, list, revoke, CLI -----------------------------------------
ISSUED = re.compile(r'<code id="issued-link"[^>]*>http://localhost(/login/link/[^<]+)</code>')


@pytest.fixture
def admin(app: Flask) -> ConsoleBrowser:
    return passkey_browser(app, "root@example.com")


def send_link(admin: ConsoleBrowser, user_id: str, ttl: str = "900") -> str:
    response = admin.post(f"/admin/users/{user_id}/login-link", {"ttl": ttl})
    assert response.status_code == 200, response.text
    match = ISSUED.search(response.text)
    assert match, response.text
    return match.group(1)


def test_send_login_link_emails_it_shows_it_once_and_lists_it(
    app: Flask, admin: ConsoleBrowser, user: CreatedUser
) -> None:
    path = send_link(admin, user.id)
    with app.app_context():
        mail = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "login_link")
        ).one()
        assert mail.recipient == user.email
        assert path in mail.body  # emailed (the outbox, without SMTP) ...
        link = db.session.scalars(select(LoginLink)).one()
        assert (link.created_by, link.purpose) == (admin.user.id, "login")
        issued = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "login_link.issued")
        ).one()
        assert (issued.actor_id, issued.subject_id) == (admin.user.id, user.id)
    page = admin.browser.get(f"/admin/users/{user.id}").text
    assert path not in page  # ... shown to the admin once, then only listed
    assert f'data-link-id="{link.id_hash[:16]}"' in page
    # Using it: a confirmation page, the POST signs in, a passkey first; audited and told.
    browser = app.test_client()
    assert open_and_confirm(browser, path.rsplit("/", 1)[1]) == (302, "/account/recover")
    with app.app_context():
        used = db.session.scalars(select(AuditEvent).where(AuditEvent.kind == "login.link")).one()
        assert (used.outcome, used.subject_id, used.details["issued_by"]) == (
            "success", user.id, admin.user.id
        )  # fmt: skip
        told = db.session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.kind == "login_link_used")
        ).all()
        assert told == [user.email]
    assert 'data-link-id="' not in admin.browser.get(f"/admin/users/{user.id}").text


def test_login_link_lifetime_defaults_to_15_minutes_and_is_bounded(
    app: Flask, admin: ConsoleBrowser, user: CreatedUser
) -> None:
    page = admin.browser.get(f"/admin/users/{user.id}").text
    assert '<option value="900" selected>15 minutes</option>' in page
    send_link(admin, user.id, ttl="86400")
    for ttl in ("59", "86401", "-5"):
        refused = admin.post(f"/admin/users/{user.id}/login-link", {"ttl": ttl})
        assert refused.status_code == 303
        assert (
            "between 1 minute and 24 hours" in admin.browser.get(refused.headers["Location"]).text
        )
    send_link(admin, user.id, ttl="junk")  # not a number: the default
    with app.app_context():
        lifetimes = sorted(
            round((row.expires_at - row.created_at).total_seconds())
            for row in db.session.scalars(select(LoginLink))
        )
        assert lifetimes == [900, 86400]


def test_a_link_revoked_on_the_user_page_is_refused(
    app: Flask, admin: ConsoleBrowser, user: CreatedUser
) -> None:
    path = send_link(admin, user.id)
    with app.app_context():
        link_id = db.session.scalars(select(LoginLink.id_hash)).one()[:16]
    response = admin.post(f"/admin/users/{user.id}/links/revoke", {"link_id": link_id})
    assert "Link revoked" in admin.browser.get(response.headers["Location"]).text
    assert open_and_confirm(app.test_client(), path.rsplit("/", 1)[1])[0] == 400
    with app.app_context():
        revoked = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "admin.login_link_revoked")
        ).one()
        assert (revoked.actor_id, revoked.subject_id) == (admin.user.id, user.id)


def test_another_users_link_cannot_be_revoked_through_this_user(
    app: Flask, admin: ConsoleBrowser, user: CreatedUser
) -> None:
    """A foreign link id: the revoke names the user whose page it is, and only their links."""
    path = send_link(admin, user.id)
    bob = create_user(app, email="bob@example.com")
    with app.app_context():
        link_id = db.session.scalars(select(LoginLink.id_hash)).one()[:16]
    response = admin.post(f"/admin/users/{bob.id}/links/revoke", {"link_id": link_id})
    assert "never existed" in admin.browser.get(response.headers["Location"]).text
    for made_up in ("", "x" * 16, link_id[:8], "%" * 16):
        admin.post(f"/admin/users/{user.id}/links/revoke", {"link_id": made_up})
    assert open_and_confirm(app.test_client(), path.rsplit("/", 1)[1]) == (302, "/account/recover")


def test_another_users_link_signs_in_only_its_own_user(app: Flask, user: CreatedUser) -> None:
    bob = create_user(app, email="bob@example.com")
    browser = app.test_client()
    start_session(browser, user)
    assert open_and_confirm(browser, issue(app, bob))[0] == 302
    with app.app_context():
        sessions = db.session.scalars(
            select(BrowserSession).where(BrowserSession.revoked_at.is_(None))
        ).all()
        assert [s.user_id for s in sessions] == [bob.id]  # Ada's session in that browser ended


def test_no_login_link_for_a_disabled_user(
    app: Flask, admin: ConsoleBrowser, user: CreatedUser
) -> None:
    with app.app_context():
        db.session.execute(update(User).where(User.id == user.id).values(disabled_at=utcnow()))
        db.session.commit()
    page = admin.browser.get(f"/admin/users/{user.id}").text
    assert 'id="send-login-link"' not in page
    refused = admin.post(f"/admin/users/{user.id}/login-link", {"ttl": "900"})
    assert refused.status_code == 303
    with app.app_context():
        assert db.session.scalars(select(LoginLink)).all() == []


def test_cli_login_link_list_and_revoke(tmp_path: Path) -> None:
    runner = initialised_cli(tmp_path, IDP_ISSUER="http://localhost:5000", IDP_PRODUCTION="true")
    assert runner.invoke(main, ["users", "create", "ada@example.com"]).exit_code == 0

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(main, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    first = json.loads(run("login-link", "ada@example.com", "--json"))  # the short form
    second = json.loads(run("login-link", "issue", "ada@example.com", "--ttl", "3600", "--json"))
    listed = json.loads(run("login-link", "list", "ada@example.com", "--json"))
    # The newer link ended the older one (one rescue link at a time: idp.services.user_admin).
    assert [row["id"] for row in listed] == [second["id"]]
    assert all(second["url"] not in str(row) for row in listed)  # never the secret
    assert "never existed" in run("login-link", "revoke", "ada@example.com", first["id"], ok=False)
    assert "revoked 1 link" in run("login-link", "revoke", "ada@example.com", second["id"])
    assert "never existed" in run("login-link", "revoke", "ada@example.com", second["id"], ok=False)
    assert "or --all" in run("login-link", "revoke", "ada@example.com", ok=False)
    run("login-link", "ada@example.com")
    assert "revoked 1 link" in run("login-link", "revoke", "ada@example.com", "--all")
    assert json.loads(run("login-link", "list", "ada@example.com", "--json")) == []
    assert "no user nobody@example.com" in run("login-link", "list", "nobody@example.com", ok=False)
    assert "--ttl must be between" in run("login-link", "ada@example.com", "--ttl", "30", ok=False)
    with Session(create_engine(runner.env["IDP_DATABASE_URL"])) as session:
        kinds = session.execute(
            select(AuditEvent.kind, AuditEvent.actor_id).where(AuditEvent.kind.contains("link"))
        ).all()
        assert [tuple(k) for k in kinds] == [
            ("login_link.issued", "cli"), ("login_link.revoked", "cli"),
            ("login_link.issued", "cli"), ("admin.login_link_revoked", "cli"),
            ("login_link.issued", "cli"), ("admin.login_link_revoked", "cli"),
        ]  # fmt: skip


def test_a_restricted_session_cannot_change_the_passkey_prompt_settings(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """A restricted session (here a login link's) may only add a way in: the passkey prompt after
    a password sign-in sends it back to adding one, and its "not now" and "don't ask again"
    change nothing of the account."""
    assert open_and_confirm(client, issue(app, user)) == (302, "/account/recover")
    token = csrf_meta(client.get("/account/recover").text)
    shown = client.get("/login/passkey-prompt")
    assert shown.status_code == 302
    assert shown.headers["Location"].endswith("/account/recover")
    for choice in ("never", "later"):
        answer = client.post("/login/passkey-prompt", data={"csrf_token": token,
                                                             "choice": choice})  # fmt: skip
        assert answer.status_code == 302
        assert answer.headers["Location"].endswith("/account/recover")
    with app.app_context():
        stored = db.session.get(User, user.id)
        assert stored is not None
        assert not stored.passkey_prompt_disabled
        assert stored.passkey_prompt_snoozed_until is None


def test_a_restricted_session_cannot_grant_consent_or_authorize_a_client(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """A restricted session (here a login link's) may only add a sign-in method: it neither
    grants consent to a client nor completes an authorization until it is a full session."""
    assert open_and_confirm(client, issue(app, user)) == (302, "/account/recover")
    third_party = RelyingParty(client, create_client(app, name="Third", first_party=False))
    # A request that waits stored (the sign-in page's own carries it instead: a consent page is
    # only ever reached with a stored one): one the client pushed (RFC 9126 4).
    registered = third_party.registered
    pushed = client.post("/par", data=third_party.authorize_params(),
                         auth=(registered.client_id, registered.client_secret or ""))  # fmt: skip
    assert pushed.status_code == 201, pushed.text
    to_login = client.get("/authorize", query_string={
        "client_id": registered.client_id, "request_uri": pushed.get_json()["request_uri"],
    }).headers["Location"]  # fmt: skip
    assert to_login.startswith("/login?")
    pending = query_of(to_login)["request"]
    token = csrf_meta(client.get("/account/recover").text)

    shown = client.get("/consent", query_string={"request": pending})
    assert shown.status_code == 302
    assert shown.headers["Location"].startswith("/login?")
    allowed = client.post(
        "/consent", data={"csrf_token": token, "request": pending, "decision": "allow"}
    )
    assert allowed.status_code == 302
    assert allowed.headers["Location"].startswith("/login?")
    with app.app_context():
        assert db.session.scalars(select(Consent)).all() == []
        stored = db.session.get(PendingAuthorization, pending)
        assert stored is not None
        assert stored.consented_by is None
    resumed = client.get(f"/authorize/continue/{pending}")
    assert resumed.headers["Location"].startswith("/login?")
