"""Email addresses and email changes (docs/security.md, "Mail and email addresses"): one parser at
every entry point, a single addr-spec for an email change, and a pending change that is a stored,
single-use record which a new request, a password change, "sign out everywhere" or Cancel ends."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from idp.checkpoints import CHECKPOINT_DIR_ENV
from idp.cli import main
from idp.clock import FrozenClock
from idp.extensions import db
from idp.models import AuditEvent, EmailChangeRequest, OutboxMessage, User
from idp.services.users import (
    EMAIL_CHANGE_FREE_CHECKPOINT,
    MAX_EMAIL_CHANGES_PER_HOUR,
    MAX_EMAIL_VERIFICATIONS_PER_HOUR,
)
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.cli import initialised_cli
from tests.support.factories import CreatedUser, create_user
from tests.support.flow import csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages

#: The review's values: a display name hiding the real recipient, a list, and a
#: header injection; then other shapes that are not one plain addr-spec.
HOSTILE = [
    '"victim@corp.example" <mallory@evil.example>',
    "victim@corp.example, mallory@evil.example",
    "mallory@evil.example\r\nBcc: victim@corp.example",
    "mallory@evil.example\r\n",
    "mallory@evil.example\n",
    "Mallory <mallory@evil.example>",
    "<mallory@evil.example>",
    '"mallory"@evil.example',
    "mallory@evil.example (comment)",
    "mallory@[127.0.0.1]",
    "mallory@evil.example\tx",
    "mallory@@evil.example",
]


def csrf_of(browser: FlaskClient, path: str = "/account/profile") -> str:
    return csrf_token(browser.get(path).text)


def outbox(app: Flask, kind: str) -> list[OutboxMessage]:
    with app.app_context():
        messages = list(
            db.session.scalars(
                select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
            )
        )
        db.session.expunge_all()
        return messages


def email_of(app: Flask, user_id: str) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        assert user is not None
        return user.email


def ask_change(browser: FlaskClient, new_email: str) -> str:
    """Request a change; the path of the link mailed to the new address."""
    response = browser.post(
        "/account/email", data={"csrf_token": csrf_of(browser), "email": new_email}
    )
    assert response.status_code == 302, response.text
    return response.headers["Location"]


def mailed_link(app: Flask, new_email: str) -> str:
    [*_, message] = [m for m in outbox(app, "email_change_requested") if m.recipient == new_email]
    found = re.search(r"http://localhost(/account/email/confirm\?token=\S+)", message.body)
    assert found
    return found.group(1)


def confirm(browser: FlaskClient, link: str) -> int:
    page = browser.get(link)  # a page; only the POST changes anything
    assert page.status_code == 200
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token
    form = {"csrf_token": csrf_token(page.text), "token": token.group(1)}
    return browser.post("/account/email/confirm", data=form).status_code


# -- one parser at every entry point -------------------------------------------------------------
@pytest.mark.parametrize("hostile", HOSTILE)
def test_an_email_change_accepts_only_a_single_addr_spec(storage_app: Flask, hostile: str) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    response = browser.post("/account/email", data={"csrf_token": csrf_of(browser),
                                                    "email": hostile})  # fmt: skip
    assert response.status_code == 302  # a form error, never a 500
    assert response.headers["Location"] == "/account/profile"
    assert "Enter an email address" in browser.get("/account/profile").text
    assert outbox(storage_app, "email_change_requested") == []
    assert outbox(storage_app, "email_change_pending") == []
    with storage_app.app_context():
        assert db.session.scalars(select(EmailChangeRequest)).all() == []


def test_an_email_change_stores_the_normalised_address(app: Flask, client: FlaskClient) -> None:
    user = create_user(app)
    start_session(client, user)
    ask_change(client, "  Ada.King@New.Example ")
    [change] = outbox(app, "email_change_requested")
    assert change.recipient == "ada.king@new.example"


@pytest.mark.parametrize("hostile", HOSTILE[:3])
def test_sign_up_refuses_what_is_not_a_single_addr_spec(tmp_path: Path, hostile: str) -> None:
    from tests.support.apps import app_on

    with app_on("sqlite", tmp_path, signup_enabled=True) as app:
        browser = app.test_client()
        page = browser.get("/signup")
        response = browser.post(
            "/signup", data={"csrf_token": csrf_token(page.text), "email": hostile}
        )
        assert response.status_code == 400
        assert outbox(app, "signup_link") == []


@pytest.mark.parametrize("action", ["create", "invite"])
@pytest.mark.parametrize("hostile", HOSTILE[:3])
def test_the_admin_console_refuses_what_is_not_a_single_addr_spec(
    app: Flask, action: str, hostile: str
) -> None:
    admin = passkey_browser(app, "root@example.com")
    response = admin.post("/admin/users/new", {"email": hostile, "action": action})
    assert response.status_code == 400
    assert "not an email address" in response.text
    with app.app_context():
        assert db.session.scalars(select(User.email)).all() == ["root@example.com"]
    assert outbox(app, "invite") == []


def test_the_cli_refuses_what_is_not_a_single_addr_spec(tmp_path: Path) -> None:
    cli = initialised_cli(tmp_path)
    for hostile in ('"victim@corp.example" <mallory@evil.example>', "a@b.example, c@d.example"):
        result = cli.invoke(main, ["users", "create", hostile])
        assert result.exit_code != 0
        assert "not an email address" in result.output
    result = cli.invoke(main, ["users", "create", "  Grace@Example.COM "])
    assert result.exit_code == 0, result.output
    assert "grace@example.com" in result.output


def test_init_refuses_a_first_admin_address_that_is_not_a_single_addr_spec(tmp_path: Path) -> None:
    # A first ``idp init`` of an empty deployment (``initialised_cli`` would bootstrap one).
    cli = CliRunner(env={
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(tmp_path), "IDP_SECRET_KEY": "x" * 40,
    })  # fmt: skip
    result = cli.invoke(main, ["init", "--admin-email", "root@example.com, eve@evil.example"])
    assert result.exit_code != 0
    assert "not an email address" in result.output
    assert "Traceback" not in result.output


def test_development_local_domains_only_outside_production(tmp_path: Path) -> None:
    """``admin@localhost`` (the development bootstrap) and ``*.test`` are accepted only when
    ``production`` is off."""
    from idp.services.email_addresses import EmailAddressError, parse_email_address

    for address in ("admin@localhost", "ada@idp.test", "ada@node.localhost"):
        assert parse_email_address(address, allow_local_domains=True) == address
        with pytest.raises(EmailAddressError):
            parse_email_address(address, allow_local_domains=False)
    cli = initialised_cli(tmp_path)
    result = cli.invoke(main, ["users", "create", "ada@idp.test"])
    assert result.exit_code == 0, result.output


def test_a_malformed_address_at_sign_in_and_recovery_finds_nobody(
    app: Flask, client: FlaskClient
) -> None:
    """Look-ups go through the same parser: a header-injection variant of a real address is not
    that address."""
    user = create_user(app)
    page = client.get("/login")
    form = {"csrf_token": csrf_token(page.text), "password": user.password}
    response = client.post("/login", data={**form, "email": user.email + "\r\n"})
    assert response.status_code != 302
    page = client.get("/login/recover")
    response = client.post("/login/recover", data={
        "csrf_token": csrf_token(page.text), "email": f'"x" <{user.email}>', "code": "x" * 10,
    })  # fmt: skip
    assert response.status_code == 401


# -- the pending change is a stored, single-use record ------------------------------------------
def test_the_old_address_is_told_when_a_change_is_requested_and_when_it_completes(
    storage_app: Flask,
) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    [pending] = outbox(storage_app, "email_change_pending")
    assert pending.recipient == user.email
    assert "ada@new.example" in pending.body
    assert "/account/email/confirm" not in pending.body  # the link goes to the new address only
    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 302
    [changed] = outbox(storage_app, "email_changed")
    assert changed.recipient == user.email
    assert email_of(storage_app, user.id) == "ada@new.example"


def ask_confirmation(browser: FlaskClient) -> str:
    """The profile's "Send me a confirmation link": the page it leads back to."""
    response = browser.post("/account/email/verify", data={"csrf_token": csrf_of(browser)})
    assert response.status_code == 302, response.text
    return browser.get(response.headers["Location"]).text


def test_confirmation_requests_have_a_budget_of_their_own(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """The profile's "Send me a confirmation link" mails the account's own address: its
    requests count in a budget of their own (5 an hour), so that the email changes used up
    leave it its room and its requests leave the email changes theirs; past its cap a request
    sends nothing, stores nothing, says so and is audited."""
    user = create_user(storage_app)  # its address not confirmed yet
    browser = storage_app.test_client()
    start_session(browser, user)
    for index in range(MAX_EMAIL_CHANGES_PER_HOUR + 1):
        ask_change(browser, f"stranger{index}@new.example")
    assert "Too many email changes were asked for" in browser.get("/account/profile").text
    cancelled = browser.post("/account/email/cancel", data={"csrf_token": csrf_of(browser)})
    assert cancelled.status_code == 302

    for _ in range(MAX_EMAIL_VERIFICATIONS_PER_HOUR):
        assert "A confirmation link is on its way" in ask_confirmation(browser)
    own = [m for m in outbox(storage_app, "email_change_requested") if m.recipient == user.email]
    assert len(own) == MAX_EMAIL_VERIFICATIONS_PER_HOUR
    with storage_app.app_context():
        stored = len(db.session.scalars(select(EmailChangeRequest)).all())

    assert "Too many confirmation links were asked for" in ask_confirmation(browser)
    own = [m for m in outbox(storage_app, "email_change_requested") if m.recipient == user.email]
    assert len(own) == MAX_EMAIL_VERIFICATIONS_PER_HOUR
    with storage_app.app_context():
        assert len(db.session.scalars(select(EmailChangeRequest)).all()) == stored
        refused = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "email.verification_requested",
                                     AuditEvent.outcome == "failure")
        ).all()  # fmt: skip
        assert [event.details["reason"] for event in refused] == ["throttled"]

    clock.advance(timedelta(hours=1))
    start_session(browser, user)
    assert "A confirmation link is on its way" in ask_confirmation(browser)


def test_only_the_account_that_asked_confirms_a_change_signed_in(storage_app: Flask) -> None:
    """An account asks for someone else's address: the link reaches that address's owner, and
    opening it must not attach their address, verified, to the asking account (a relying party
    matching accounts by verified email would hand the owner's account over). The link works
    only in a session of the account that asked; the owner, signed out or signed in as
    themselves, changes nothing and spends nothing."""
    asking = create_user(storage_app, email="mallory@example.com")
    asking_browser = storage_app.test_client()
    start_session(asking_browser, asking)
    ask_change(asking_browser, "ada@example.com")
    link = mailed_link(storage_app, "ada@example.com")

    owner_browser = storage_app.test_client()
    page = owner_browser.get(link)
    assert page.status_code == 200
    assert "Sign in with the account that asked" in page.text
    assert 'name="token"' not in page.text
    token = link.partition("token=")[2]
    form = {"csrf_token": csrf_token(owner_browser.get("/login").text), "token": token}
    posted = owner_browser.post("/account/email/confirm", data=form)
    assert posted.status_code == 200  # the same page: nothing done
    start_session(owner_browser, create_user(storage_app, email="owner@example.com"))
    assert confirm(owner_browser, link) == 400
    assert email_of(storage_app, asking.id) == "mallory@example.com"

    assert confirm(asking_browser, link) == 302  # unspent: the account that asked may still
    assert email_of(storage_app, asking.id) == "ada@example.com"


def test_a_new_request_ends_the_pending_one(storage_app: Flask) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "first@new.example")
    first = mailed_link(storage_app, "first@new.example")
    ask_change(browser, "second@new.example")
    assert confirm(browser, first) == 400
    assert email_of(storage_app, user.id) == user.email
    assert confirm(browser, mailed_link(storage_app, "second@new.example")) == 302
    assert email_of(storage_app, user.id) == "second@new.example"


def test_cancel_on_the_profile_page_ends_the_pending_change(storage_app: Flask) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    profile = browser.get("/account/profile").text
    assert 'id="pending-email-change"' in profile
    assert "ada@new.example" in profile
    response = browser.post("/account/email/cancel", data={"csrf_token": csrf_token(profile)})
    assert response.status_code == 302
    assert 'id="pending-email-change"' not in browser.get("/account/profile").text
    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 400
    assert email_of(storage_app, user.id) == user.email


def test_a_password_change_ends_the_pending_change(storage_app: Flask) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    response = browser.post("/account/password", data={
        "csrf_token": csrf_of(browser, "/account"), "new_password": "another fine passphrase 9",
    })  # fmt: skip
    assert response.status_code == 302
    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 400
    assert email_of(storage_app, user.id) == user.email


def test_removing_the_password_asks_first_and_ends_the_pending_change(storage_app: Flask) -> None:
    """Removing the password is destructive like every other removal: a GET or a bare POST shows
    its confirmation page and changes nothing. Once confirmed it ends a pending email change, as
    a password change does: the change may be the work of whoever knew the password."""
    user = create_user(storage_app)
    pages = PasskeyPages(storage_app.test_client())
    browser = pages.browser
    start_session(browser, user)
    key = SoftAuthenticator()
    assert pages.add_passkey(key).status_code == 201
    assert pages.sign_in_with_passkey(key).status_code == 200  # the step-up a removal needs
    ask_change(browser, "ada@new.example")

    token = csrf_of(browser, "/account")
    bare = browser.post("/account/password/remove", data={"csrf_token": token})
    for ask in (browser.get("/account/password/remove"), bare):
        assert ask.status_code == 200
        assert "Remove your password?" in ask.text
    with storage_app.app_context():
        assert db.session.get(User, user.id).password_hash is not None  # type: ignore[union-attr]

    removed = browser.post("/account/password/remove", data={
        "csrf_token": csrf_of(browser, "/account"), "confirm": "yes",
    })  # fmt: skip
    assert removed.status_code == 302
    with storage_app.app_context():
        assert db.session.get(User, user.id).password_hash is None  # type: ignore[union-attr]
    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 400
    assert email_of(storage_app, user.id) == user.email


@pytest.mark.parametrize("storage_app", ["postgresql"], indirect=True)
def test_of_two_confirmations_of_one_new_address_one_changes_and_the_other_is_a_calm_400(
    storage_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two accounts asked for one new address; both confirm at once, each held after it found
    the address free: one takes it, the other gets the page a later confirmation gets (the
    address is taken), not a 500 from the unique index. PostgreSQL only: SQLite's ``BEGIN
    IMMEDIATE`` already holds the second before its look-up."""
    forms = []
    for email in ("ada@example.com", "grace@example.com"):
        browser = storage_app.test_client()
        start_session(browser, create_user(storage_app, email=email))
        ask_change(browser, "shared@new.example")
        page = browser.get(mailed_link(storage_app, "shared@new.example"))
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token
        forms.append((browser, {"csrf_token": csrf_token(page.text), "token": token.group(1)}))
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(EMAIL_CHANGE_FREE_CHECKPOINT)
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(checkpoints.directory))

    with ThreadPoolExecutor(2) as pool:
        with checkpoints.holding(EMAIL_CHANGE_FREE_CHECKPOINT):
            calls = [pool.submit(b.post, "/account/email/confirm", data=f) for b, f in forms]
            wait_until(lambda: checkpoints.arrivals(EMAIL_CHANGE_FREE_CHECKPOINT) == 2, "both")
        answers = sorted(call.result().status_code for call in calls)
    assert answers == [302, 400]
    with storage_app.app_context():
        emails = sorted(db.session.scalars(select(User.email)))
    assert "shared@new.example" in emails
    assert len(emails) == 2


def test_signing_out_everywhere_ends_the_pending_change(storage_app: Flask) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    response = browser.post(
        "/account/sessions/revoke-others",
        data={"csrf_token": csrf_of(browser, "/account/sessions")},
    )
    assert response.status_code == 302
    assert confirm(browser, mailed_link(storage_app, "ada@new.example")) == 400
    assert email_of(storage_app, user.id) == user.email


@pytest.mark.parametrize("ending", ["sessions/revoke-all", "disable"])
def test_an_admin_ending_every_session_of_the_user_ends_the_pending_change(
    storage_app: Flask, ending: str
) -> None:
    """The user's own "sign out everywhere" ends a pending email change, which may be the work
    of one of the sessions it ended; so does an admin's, and disabling the account: the user
    signed in again (or enabled again) cannot be led to confirm it."""
    admin = passkey_browser(storage_app, "root@example.com")
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    assert admin.post(f"/admin/users/{user.id}/{ending}").status_code == 303
    if ending == "disable":
        assert admin.post(f"/admin/users/{user.id}/enable").status_code == 303
    again = storage_app.test_client()
    start_session(again, user)
    assert confirm(again, mailed_link(storage_app, "ada@new.example")) == 400
    assert email_of(storage_app, user.id) == user.email


def test_a_used_link_does_not_work_again_when_the_address_returns_to_its_old_value(
    storage_app: Flask,
) -> None:
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    ask_change(browser, "ada@new.example")
    away = mailed_link(storage_app, "ada@new.example")
    assert confirm(browser, away) == 302
    ask_change(browser, user.email)  # and back again
    assert confirm(browser, mailed_link(storage_app, user.email)) == 302
    assert email_of(storage_app, user.id) == user.email
    assert confirm(browser, away) == 400  # the first link, replayed, changes nothing
    assert email_of(storage_app, user.id) == user.email


# -- backup codes ----------------------------------------------------------------------------------
def test_regenerating_backup_codes_notifies_the_user(app: Flask, client: FlaskClient) -> None:
    user: CreatedUser = create_user(app)
    start_session(client, user)
    response = client.post(
        "/account/backup-codes", data={"csrf_token": csrf_of(client, "/account"), "confirm": "yes"}
    )
    assert response.status_code == 200
    [message] = outbox(app, "backup_codes_regenerated")
    assert message.recipient == user.email
    assert "New backup codes were created" in message.body


def test_email_change_requests_are_capped_per_account_and_hour(
    storage_app: Flask, clock: FrozenClock
) -> None:
    """Each request mails a confirmation link to an address the user types and a notice to the
    old one: past the hour's cap a request sends nothing, stores nothing and says so; the next
    hour has room again."""
    user = create_user(storage_app)
    browser = storage_app.test_client()
    start_session(browser, user)
    for index in range(MAX_EMAIL_CHANGES_PER_HOUR):
        ask_change(browser, f"stranger{index}@new.example")
    assert len(outbox(storage_app, "email_change_requested")) == MAX_EMAIL_CHANGES_PER_HOUR
    with storage_app.app_context():
        stored = len(db.session.scalars(select(EmailChangeRequest)).all())

    ask_change(browser, "one-too-many@new.example")
    assert "Too many email changes were asked for" in browser.get("/account/profile").text
    assert len(outbox(storage_app, "email_change_requested")) == MAX_EMAIL_CHANGES_PER_HOUR
    assert len(outbox(storage_app, "email_change_pending")) == MAX_EMAIL_CHANGES_PER_HOUR
    with storage_app.app_context():
        assert len(db.session.scalars(select(EmailChangeRequest)).all()) == stored

    clock.advance(timedelta(hours=1))
    start_session(browser, user)  # the step-up window has passed too
    ask_change(browser, "next-hour@new.example")
    assert confirm(browser, mailed_link(storage_app, "next-hour@new.example")) == 302
