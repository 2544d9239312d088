"""The account portal: sessions, connected apps, activity, profile, and the step-up rule."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import (
    AuditEvent,
    BackupCode,
    BrowserSession,
    Consent,
    OutboxMessage,
    Passkey,
    User,
)
from idp.services import portal
from tests.functional.test_admin_audit import link
from tests.support.admin import age_sign_in
from tests.support.authenticator import SoftAuthenticator
from tests.support.factories import CreatedUser, create_client, create_user
from tests.support.flow import RelyingParty, csrf_token, start_session
from tests.support.passkey_flow import PasskeyPages

BACKUP_CODE = re.compile(r"<li><code>([a-z0-9-]+)</code></li>")


def csrf_of(client: FlaskClient, path: str = "/account") -> str:
    return csrf_token(client.get(path).text)


# -- step-up ------------------------------------------------------------------------------------
def test_step_up_refuses_a_sign_in_older_than_five_minutes(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    start_session(client, user)
    token = csrf_of(client)
    age_sign_in(app, user.id, 6)
    response = client.post("/account/backup-codes", data={"csrf_token": token, "confirm": "yes"})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_regenerating_backup_codes_asks_first_and_says_the_old_ones_stop_working(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    start_session(client, user)
    first = client.post("/account/backup-codes", data={"csrf_token": csrf_of(client),
                                                       "confirm": "yes"})  # fmt: skip
    old = BACKUP_CODE.findall(first.text)
    assert len(old) == 10
    with app.app_context():
        before = set(db.session.scalars(select(BackupCode.code_hash)))
    bare = client.post("/account/backup-codes", data={"csrf_token": csrf_of(client)})
    for ask in (client.get("/account/backup-codes"), bare):
        assert ask.status_code == 200
        assert "the 10 codes you have now stop working at once" in ask.text
    with app.app_context():
        assert set(db.session.scalars(select(BackupCode.code_hash))) == before


#: The controls of templates/account/_backup_codes.html, wherever new codes are shown.
BACKUP_CODE_CONTROLS = ('id="download-codes"', 'id="copy-codes"', 'id="print-codes"',
                        "/static/backup_codes.js")  # fmt: skip


def test_every_page_that_shows_new_backup_codes_offers_download_copy_and_print(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """The regenerate page, and the account page where account.js shows the codes of a first
    passkey (from the partial's <template>), share one partial and one script."""
    start_session(client, user)
    home = client.get("/account").text
    template = re.search(r'<template id="backup-codes-template">(.*?)</template>', home, re.S)
    assert template, "no backup codes partial for a first passkey"
    for control in BACKUP_CODE_CONTROLS[:3]:
        assert control in template.group(1)
    assert home.index("/static/backup_codes.js") < home.index("/static/account.js")
    shown = client.post("/account/backup-codes", data={"csrf_token": csrf_of(client),
                                                       "confirm": "yes"})  # fmt: skip
    for control in BACKUP_CODE_CONTROLS:
        assert control in shown.text
    codes = BACKUP_CODE.findall(shown.text)
    assert len(codes) == 10
    assert "data:text/plain;charset=utf-8," + "%0A".join(codes) in shown.text


def test_every_page_that_can_add_a_first_passkey_loads_the_backup_codes_script() -> None:
    """First admin and recovery (account/recover.html), invitation and sign-up
    (signup/passkey.html), the prompt after a password sign-in and the account page: each page
    with the add-passkey control (whose partial carries the codes' <template>) loads
    static/backup_codes.js before static/account.js, which uses it."""
    templates = Path(__file__).resolve().parents[2] / "idp" / "templates"
    pages = [p for p in templates.rglob("*.html") if "{{ add_passkey(" in p.read_text()]
    assert {p.relative_to(templates).as_posix() for p in pages} >= {
        "account/home.html", "account/recover.html", "signup/passkey.html",
        "login/passkey_prompt.html",
    }  # fmt: skip
    for page in pages:
        text = page.read_text()
        assert "backup_codes.js" in text, page
        assert text.index("backup_codes.js") < text.index("account.js"), page


def test_a_passkey_only_user_is_told_an_authenticator_app_adds_nothing_yet(
    app: Flask, client: FlaskClient
) -> None:
    """TOTP is a second step after a password: without one it protects nothing, and the account
    page and the set-up page say so."""
    passwordless = create_user(app, email="pk@example.com")
    start_session(client, passwordless)
    with app.app_context():  # went passwordless after signing in (the account page's button)
        db.session.execute(update(User).values(password_hash=None))
        db.session.commit()
    assert 'id="totp-passwordless-note"' in client.get("/account").text
    assert 'id="totp-passwordless-note"' in client.get("/account/totp").text
    with_password = app.test_client()
    start_session(with_password, create_user(app))
    assert 'id="totp-passwordless-note"' not in with_password.get("/account").text
    assert 'id="totp-passwordless-note"' not in with_password.get("/account/totp").text


def test_step_up_refuses_a_password_session_when_the_user_has_a_passkey(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """as strong as the strongest method. Otherwise a stolen password could add the
    attacker's own passkey next to the user's."""
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    first = SoftAuthenticator()
    assert (
        pages.add_passkey(first).status_code == 201
    )  # no passkey yet: a password session is enough
    refused = pages.registration_options()
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "reauthenticate"
    assert pages.sign_in_with_passkey(first).status_code == 200
    assert pages.registration_options().status_code == 200


def test_step_up_message_names_the_passkey(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    assert pages.add_passkey(SoftAuthenticator()).status_code == 201
    response = client.post("/account/backup-codes", data={"csrf_token": csrf_of(client)})
    page = client.get(response.headers["Location"]).text
    assert "sign in again with your passkey" in page


def test_after_the_step_up_an_action_that_asks_first_comes_back_to_its_question(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """New backup codes, removing the password or a passkey ask for a recent sign-in and then
    ask first: the sign-in leads back to that question, not to the top of the account page
    with nothing said of the action (which the user then had to find and press again)."""
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    key = SoftAuthenticator()
    assert pages.add_passkey(key).status_code == 201
    [credential_id] = key.credential_ids()
    age_sign_in(app, user.id, 6)
    actions = {
        "/account/backup-codes": "Get new backup codes?",
        "/account/password/remove": "Remove your password?",
        f"/account/passkeys/{credential_id}/remove": "Remove the passkey",
    }
    for action in actions:
        response = client.post(action, data={"csrf_token": csrf_of(client)})
        assert response.status_code == 302
        location = urlsplit(response.headers["Location"])
        assert location.path == "/login"
        assert parse_qs(location.query)["next"] == [action]
    assert pages.sign_in_with_passkey(key).status_code == 200
    for action, question in actions.items():
        asked = client.get(action)
        assert asked.status_code == 200
        assert question in html.unescape(asked.text)
    with app.app_context():  # only asked: every code, the password and the passkey are there
        unspent = BackupCode.user_id == user.id, BackupCode.consumed_at.is_(None)
        assert len(db.session.scalars(select(BackupCode).where(*unspent)).all()) == 10
        stored = db.session.get(User, user.id)
        assert stored is not None
        assert stored.password_hash is not None
        assert db.session.get(Passkey, credential_id) is not None


# -- sessions -----------------------------------------------------------------------------------
def test_sessions_page_lists_each_session_and_marks_this_one(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    other = app.test_client()
    start_session(other, user)
    start_session(client, user)
    page = client.get("/account/sessions", headers={"User-Agent": "x"}).text
    assert page.count('class="row"') == 2
    assert page.count("This session") == 1


def test_revoking_a_session_asks_first_then_kills_it_at_once(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    other = app.test_client()
    start_session(other, user)
    start_session(client, user)
    with app.app_context():
        sids = {s.sid for s in db.session.scalars(select(BrowserSession))}
    page = client.get("/account/sessions").text
    current = re.findall(r'data-sid="([^"]+)"', page)
    target = next(sid for sid in sids if f'data-sid="{sid}"' in page and sid != _this(page))
    # A POST without the confirmation page's confirm field only shows that page.
    asked = client.post(f"/account/sessions/{target}/revoke", data={"csrf_token": csrf_token(page)})
    assert asked.status_code == 200
    assert 'name="confirm" value="yes"' in asked.text
    assert other.get("/account").status_code == 200
    response = client.post(
        f"/account/sessions/{target}/revoke",
        data={"csrf_token": csrf_token(page), "confirm": "yes"},
    )
    assert response.status_code == 302
    assert len(current) == 2
    assert other.get("/account").headers["Location"].startswith("/login")
    assert client.get("/account").status_code == 200


def _this(page: str) -> str:
    match = re.search(
        r'data-sid="([^"]+)">\s*<div>\s*<strong>[^<]*</strong> <span class="badge">This', page
    )
    assert match, "no current session marked"
    return match.group(1)


def test_sign_out_all_other_sessions(app: Flask, client: FlaskClient, user: CreatedUser) -> None:
    others = [app.test_client() for _ in range(2)]
    for other in others:
        start_session(other, user)
    start_session(client, user)
    token = csrf_of(client, "/account/sessions")
    assert (
        client.post("/account/sessions/revoke-others", data={"csrf_token": token}).status_code
        == 302
    )
    for other in others:
        assert other.get("/account").headers["Location"].startswith("/login")
    assert client.get("/account").status_code == 200


def test_a_user_cannot_revoke_another_users_session(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    stranger = create_user(app, email="eve@example.com")
    eve = app.test_client()
    start_session(eve, stranger)
    with app.app_context():
        eve_sid = db.session.scalars(select(BrowserSession.sid)).one()
    start_session(client, user)
    client.post(f"/account/sessions/{eve_sid}/revoke",
                data={"csrf_token": csrf_of(client), "confirm": "yes"})  # fmt: skip
    assert eve.get("/account").status_code == 200


# -- connected apps -----------------------------------------------------------------------------
def test_disconnecting_an_app_asks_first_then_removes_consent_and_revokes_its_tokens(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    rp = RelyingParty(client, create_client(app, first_party=False, name="Third Party"))
    response = rp.sign_in(rp.sign_in_page(), user)
    while "/consent" not in response.headers["Location"]:
        response = client.get(response.headers["Location"])
    page = client.get(response.headers["Location"]).text
    pending = re.search(r'name="request" value="([^"]+)"', page)
    assert pending
    allow = {"csrf_token": csrf_token(page), "request": pending.group(1), "decision": "allow"}
    callback = rp.follow_to_callback(client.post("/consent", data=allow))
    tokens = rp.exchange(callback["code"]).get_json()
    assert "Third Party" in client.get("/account/apps").text
    asked = client.post(f"/account/apps/{rp.registered.client_id}/revoke",
                        data={"csrf_token": csrf_of(client)})  # fmt: skip
    assert asked.status_code == 200
    assert "Disconnect Third Party?" in asked.text
    assert rp.userinfo(tokens["access_token"]).status_code == 200  # nothing happened
    response = client.post(
        f"/account/apps/{rp.registered.client_id}/revoke",
        data={"csrf_token": csrf_of(client), "confirm": "yes"},
    )
    assert response.status_code == 302
    with app.app_context():
        assert db.session.scalars(select(Consent)).all() == []
    assert rp.userinfo(tokens["access_token"]).status_code == 401
    refreshed = rp.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.get_json()["error"] == "invalid_grant"


# -- activity and profile -----------------------------------------------------------------------
def test_activity_shows_the_users_own_events_newest_first(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    start_session(client, user)
    wrong = app.test_client()
    page = wrong.get("/login").text
    wrong.post(
        "/login",
        data={"csrf_token": csrf_token(page), "email": user.email, "password": "nope nope"},
    )
    text = html.unescape(client.get("/account/activity").text)
    assert text.index("Someone tried to sign in with a wrong password") < text.index(
        "You signed in with your password"
    )
    assert "login: password" not in text  # sentences, not event names


def test_activity_says_which_app_the_user_signed_in_to_and_how(
    app: Flask, rp: RelyingParty, user: CreatedUser
) -> None:
    rp.tokens_for(user)
    text = html.unescape(rp.browser.get("/account/activity").text)
    assert "You signed in to Relying Party with your password" in text


def test_activity_is_paginated(app: Flask, client: FlaskClient, user: CreatedUser) -> None:
    start_session(client, user)
    with app.app_context():
        for _ in range(25):
            db.session.add(AuditEvent(kind="test.event", subject_id=user.id))
        db.session.commit()
    first = client.get("/account/activity").text
    assert 'id="older"' in first
    assert 'id="newer"' not in first
    second = client.get(link(first, "older")).text
    assert 'id="newer"' in second
    assert 'id="older"' not in second
    assert client.get("/account/activity", query_string={"cursor": "nonsense"}).status_code == 400


def test_an_event_recorded_between_two_activity_pages_neither_repeats_nor_hides_one(
    storage_app: Flask,
) -> None:
    """docs/security.md: the activity pages follow the cursor of their Older and Newer links
    (keyset on the log's id), so an event the user's own sign-in records while they read moves
    no row: the next page starts right after the last one shown. With an OFFSET the newest
    event pushed the first page's last row onto the second page too."""
    user = create_user(storage_app, email="reader@example.com")
    browser = storage_app.test_client()
    start_session(browser, user)
    with storage_app.app_context():
        for i in range(2 * portal.ACTIVITY_PAGE_SIZE):
            db.session.add(AuditEvent(kind=f"test.e{i:03d}", subject_id=user.id))
        db.session.commit()
        every = [kind for (kind,) in db.session.execute(
            select(AuditEvent.kind).where(AuditEvent.subject_id == user.id)
            .order_by(AuditEvent.id.desc()))]  # fmt: skip
    first = browser.get("/account/activity").text
    shown = re.findall(r'data-kind="([^"]+)"', first)
    assert shown == every[: portal.ACTIVITY_PAGE_SIZE]
    # A sign-in elsewhere while the page is open: a newer event of the user's.
    with storage_app.app_context():
        db.session.add(AuditEvent(kind="test.meanwhile", subject_id=user.id))
        db.session.commit()
    second = browser.get(link(first, "older")).text
    following = re.findall(r'data-kind="([^"]+)"', second)
    assert following == every[portal.ACTIVITY_PAGE_SIZE : 2 * portal.ACTIVITY_PAGE_SIZE]
    # Back to the newer page: the page it was, the new event above it on the first page only.
    back = browser.get(link(second, "newer")).text
    assert re.findall(r'data-kind="([^"]+)"', back) == shown
    top = re.findall(r'data-kind="([^"]+)"', browser.get("/account/activity").text)
    assert top[0] == "test.meanwhile"


def test_name_change(app: Flask, client: FlaskClient, user: CreatedUser) -> None:
    start_session(client, user)
    client.post("/account/profile", data={"csrf_token": csrf_of(client), "name": "  Ada  King "})
    with app.app_context():
        assert db.session.get(User, user.id).name == "Ada King"  # type: ignore[union-attr]


def test_a_name_change_is_audited_with_both_names_and_a_save_without_one_is_not(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    """OWASP ASVS 4.0 7.1.3: the audit says what changed, the name before and after (the
    ``name`` claim relying parties read), as an admin's rename does; saving the profile page
    without changing the name wrote a row each time, which says nothing and buries what does."""
    start_session(client, user)
    for name in ("Ada King", "Ada King", " Ada  King "):
        client.post("/account/profile", data={"csrf_token": csrf_of(client), "name": name})
    with app.app_context():
        events = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "profile.updated")
        ).all()
        assert [(e.details["previous_name"], e.details["name"]) for e in events] == [
            ("Ada Lovelace", "Ada King")
        ]


def test_email_change_is_confirmed_from_the_new_address_once(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    start_session(client, user)
    client.post("/account/email", data={"csrf_token": csrf_of(client), "email": "ada@new.example"})
    with app.app_context():
        assert db.session.get(User, user.id).email == user.email  # type: ignore[union-attr]
        message = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "email_change_requested")
        ).one()
        assert message.recipient == "ada@new.example"
    link = re.search(r"http://localhost(/account/email/confirm\?token=\S+)", message.body)
    assert link
    page = client.get(link.group(1))  # a mail scanner's GET changes nothing
    with app.app_context():
        assert db.session.get(User, user.id).email == user.email  # type: ignore[union-attr]
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    confirm = {"csrf_token": csrf_token(page.text), "token": token}
    assert client.post("/account/email/confirm", data=confirm).status_code == 302
    with app.app_context():
        assert db.session.get(User, user.id).email == "ada@new.example"  # type: ignore[union-attr]
        old = db.session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "email_changed")
        ).one()
        assert old.recipient == user.email
    assert client.post("/account/email/confirm", data=confirm).status_code == 400


def test_email_change_needs_a_step_up(app: Flask, client: FlaskClient, user: CreatedUser) -> None:
    start_session(client, user)
    token = csrf_of(client)
    age_sign_in(app, user.id, 6)
    response = client.post("/account/email", data={"csrf_token": token, "email": "x@new.example"})
    assert response.headers["Location"].startswith("/login?next=")
    with app.app_context():
        assert db.session.scalars(select(OutboxMessage)).all() == []


def test_after_a_method_change_the_portal_offers_to_sign_out_other_sessions(
    app: Flask, client: FlaskClient, user: CreatedUser
) -> None:
    start_session(app.test_client(), user)  # the user is signed in elsewhere too
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    assert 'id="offer-sign-out-others"' not in client.get("/account").text
    assert pages.add_passkey(SoftAuthenticator()).status_code == 201
    assert 'id="offer-sign-out-others"' in client.get("/account").text
    assert 'id="offer-sign-out-others"' not in client.get("/account").text  # offered once


def test_no_offer_to_sign_out_others_without_other_sessions(
    client: FlaskClient, user: CreatedUser
) -> None:
    pages = PasskeyPages(client)
    pages.sign_in_with_password(user)
    assert pages.add_passkey(SoftAuthenticator()).status_code == 201
    assert 'id="offer-sign-out-others"' not in client.get("/account").text


# -- a refused form says so next to its field --------------------------------------------------
def _error_under(page: str, control: str, message: str) -> None:
    """``message`` is the page's only error, right after ``control`` (an element's opening tag
    text), which names it (aria-describedby); the top of the page says nothing."""
    page = html.unescape(page)
    assert 'class="flashes"' not in page
    error = re.search(r'<p class="error field-error" role="alert" id="([^"]+)">([^<]*)</p>', page)
    assert error, "no error under a field"
    assert error.group(2) == message
    start = page.index(control)
    assert start < error.start(), "the error is above its field"
    assert "<input" not in page[page.index(">", start) + 1 : error.start()]
    assert f'aria-describedby="{error.group(1)}"' in page[start : error.start()]


def test_a_refused_password_is_said_under_its_field_and_the_page_opens_there(
    client: FlaskClient, user: CreatedUser
) -> None:
    """On a phone the error of a refused password showed at the top of the account page, a screen
    or two above the password field at its bottom; now it is under the field, and the page
    opens at the password's section. Once shown, it is gone."""
    start_session(client, user)
    refused = client.post("/account/password", data={"csrf_token": csrf_of(client),
                                                      "new_password": "password123"})  # fmt: skip
    assert refused.status_code == 302
    assert refused.headers["Location"] == "/account#password-heading"
    page = client.get("/account").text
    assert 'id="password-heading"' in page
    common = ("This password is one of the most common ones, which attackers try first. "
              "Choose another (a few unrelated words work well).")  # fmt: skip
    _error_under(page, '<input id="new-password"', common)
    assert "field-error" not in client.get("/account").text


def _add_passkey(client: FlaskClient) -> str:
    """A passkey added to the signed-in account; its credential id."""
    authenticator = SoftAuthenticator()
    assert PasskeyPages(client).add_passkey(authenticator).status_code == 201
    [credential_id] = authenticator.credential_ids()
    return credential_id


def _rename(client: FlaskClient, credential_id: str, name: str) -> Any:
    return client.post(f"/account/passkeys/{credential_id}/rename",
                       data={"csrf_token": csrf_of(client), "name": name})  # fmt: skip


def test_a_refused_rename_and_password_removal_are_said_next_to_their_controls(
    client: FlaskClient, user: CreatedUser
) -> None:
    start_session(client, user)
    # Going passwordless without a passkey (a tab from before the last one went): refused, and
    # said in the password's section although the page no longer offers the button.
    refused = client.post("/account/password/remove",
                          data={"csrf_token": csrf_of(client), "confirm": "yes"})  # fmt: skip
    assert refused.headers["Location"] == "/account#password-heading"
    page = html.unescape(client.get("/account").text)
    section = page[page.index('id="password-heading"') : page.index('id="totp-heading"')]
    assert "Add a passkey before removing your password, so that you can still sign in." in section
    assert 'class="flashes"' not in page

    credential_id = _add_passkey(client)
    refused = _rename(client, credential_id, "   ")
    assert refused.headers["Location"] == f"/account#passkey-{credential_id}"
    page = client.get("/account").text
    assert f'<li class="passkey-item" id="passkey-{credential_id}"' in page
    row = page[page.index(f'id="passkey-{credential_id}"') :]
    assert row.index("A passkey needs a name.") < row.index('<input id="rename-1"')
    assert 'aria-describedby="rename-' in row[: row.index("</li>")]
    assert 'class="flashes"' not in page


def test_add_a_passkey_comes_back_ready_after_the_sign_in_it_asked_for(
    client: FlaskClient, user: CreatedUser
) -> None:
    """ "Add a passkey" when a fresh sign-in was needed sent the user to sign in, then back to the
    top of the account page with no word of the passkey. It now comes back to
    /account?resume=add-passkey, which says to press the button again, once the sign-in was
    given (and only then: before, the button would only ask again)."""
    start_session(client, user)
    pages = PasskeyPages(client)
    authenticator = SoftAuthenticator()
    assert pages.add_passkey(authenticator).status_code == 201
    # A password sign-in is no step-up next to a passkey.
    asked = pages.registration_options()
    assert asked.status_code == 403
    login = urlsplit(asked.get_json()["redirect"])
    assert login.path == "/login"
    assert parse_qs(login.query)["next"] == ["/account?resume=add-passkey"]
    assert 'id="passkey-resume"' not in client.get("/account?resume=add-passkey").text
    assert pages.sign_in_with_passkey(authenticator).status_code == 200
    page = html.unescape(client.get("/account?resume=add-passkey").text)
    resume = re.search(
        r'<div id="passkey-status"[^>]*><p [^>]*id="passkey-resume">([^<]*)</p>', page
    )
    assert resume, "no word of the passkey to add"
    assert resume.group(1) == "You're signed in again. Press “Add a passkey” to continue."
    assert 'id="passkey-resume"' not in client.get("/account").text
    # A session that ended comes back the same way after signing in.
    client.post("/logout", data={"csrf_token": csrf_of(client), "confirm": "yes"})
    ended = pages.registration_options()
    assert ended.status_code == 401
    assert parse_qs(urlsplit(ended.get_json()["redirect"]).query)["next"] == [
        "/account?resume=add-passkey"
    ]


def test_a_name_keeps_no_directional_controls_and_an_invisible_one_is_none(
    client: FlaskClient, user: CreatedUser
) -> None:
    """A name read as another: "\\u202enimda" shows as "admin" in the admin console, the
    activity page and a relying party's ``name`` claim (Unicode Standard Annex 9, explicit
    formatting). Directional controls are dropped; a name of zero-width characters only is no
    name (the passkey's rename is refused, as a blank one is)."""
    start_session(client, user)
    client.post("/account/profile",
                data={"csrf_token": csrf_of(client, "/account/profile"),
                      "name": "\u202enimda\u202c Ada"})  # fmt: skip
    with client.application.app_context():
        assert db.session.get(User, user.id).name == "nimda Ada"  # type: ignore[union-attr]
    client.post("/account/profile",
                data={"csrf_token": csrf_of(client, "/account/profile"),
                      "name": "\u200b\u2060\u200b"})  # fmt: skip
    with client.application.app_context():
        assert db.session.get(User, user.id).name == ""  # type: ignore[union-attr]
    credential_id = _add_passkey(client)
    refused = _rename(client, credential_id, "\u200b\u200b")
    assert refused.headers["Location"] == f"/account#passkey-{credential_id}"
    assert "A passkey needs a name." in client.get("/account").text
    _rename(client, credential_id, "Phone \u202eenohp")
    assert "Phone enohp" in html.unescape(client.get("/account").text)


def test_a_name_keeps_no_control_characters(client: FlaskClient, user: CreatedUser) -> None:
    """A name is one line of text: ESC, BEL, DEL or a C1 control (Unicode general category Cc)
    in it is read by the console or terminal that shows it (an ESC sequence recolours or
    rewrites the line an admin or a relying party's log reads; RFC 8264 9.12 disallows
    controls in free-form text). They are dropped; a tab or a line break is a space."""
    start_session(client, user)
    typed = "Ada\x1b[2K\x1b[1Aroot\x07\x7f\x9b\tKing\r\nLovelace"
    saved = client.post(
        "/account/profile", data={"csrf_token": csrf_of(client, "/account/profile"), "name": typed}
    )
    assert saved.status_code == 302
    with client.application.app_context():
        name = db.session.get(User, user.id).name  # type: ignore[union-attr]
    assert name == "Ada[2K[1Aroot King Lovelace"
