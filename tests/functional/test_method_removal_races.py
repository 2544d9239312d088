"""Two tabs removing sign-in methods at once (docs/architecture.md, "Never remove the last way
in"): real parallel requests on SQLite and PostgreSQL, the first held at the checkpoint where its
removal has decided (idp.services.method_removal.CHECKPOINT) while the second either decides too
(both saw the other's method still there) or waits for the first's lock. Never a sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp.models import AuditEvent, BackupCode, OutboxMessage, Passkey, TotpCredential, User
from idp.services.backup_codes import FIRST_SET_CHECKPOINT, REGENERATE_CHECKPOINT
from idp.services.method_removal import CHECKPOINT, CONSOLE_CHECKPOINT
from idp.services.totp import CONFIRM_CHECKPOINT as TOTP_CHECKPOINT
from tests.support.admin import passkey_browser
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, answered_while_held
from tests.support.factories import CreatedUser, create_user, rows
from tests.support.flow import csrf_token
from tests.support.http_flows import BACKUP_CODE, TOTP_SECRET
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import held_together as held_at


def synced() -> SoftAuthenticator:
    return SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)


def held_together(
    app: Flask, checkpoints: Checkpoints, first: Callable[[], Any], second: Callable[[], Any],
    at: str = CHECKPOINT,
) -> tuple[Any, Any]:  # fmt: skip
    """``first`` held where it decided (checkpoint ``at``, the removal's by default); then
    ``second`` until it decided too or waits for the first's lock; then both go on."""
    return held_at(app, checkpoints, first, second, at)


def _passwordless_with_two_passkeys(app: Flask) -> tuple[str, list[PasskeyPages], list[str]]:
    """A passwordless user with two passkeys, signed in with each in a tab of their own."""
    user = create_user(app)
    keys = [synced(), synced()]
    tabs = [PasskeyPages(app.test_client()), PasskeyPages(app.test_client())]
    tabs[0].sign_in_with_password(user)
    assert tabs[0].add_passkey(keys[0]).status_code == 201
    assert tabs[0].sign_in_with_passkey(keys[0]).status_code == 200
    assert tabs[0].add_passkey(keys[1]).status_code == 201
    form = {"csrf_token": _csrf(tabs[0]), "confirm": "yes"}
    removed = tabs[0].browser.post("/account/password/remove", data=form)
    assert removed.status_code == 302
    assert tabs[1].sign_in_with_passkey(keys[1]).status_code == 200
    [(password_hash,)] = [(u.password_hash,) for u in rows(app, User, User.id == user.id)]
    assert password_hash is None
    return user.id, tabs, [keys[0].credential_ids()[0], keys[1].credential_ids()[0]]


def _two_tabs_signed_in_with_a_passkey(
    app: Flask,
) -> tuple[CreatedUser, SoftAuthenticator, list[PasskeyPages]]:
    """A user with a password and a synced passkey, signed in with it in two tabs (each may
    then do what asks for a recent passkey sign-in)."""
    user = create_user(app)
    key = synced()
    tabs = [PasskeyPages(app.test_client()), PasskeyPages(app.test_client())]
    tabs[0].sign_in_with_password(user)
    assert tabs[0].add_passkey(key).status_code == 201
    for tab in tabs:
        assert tab.sign_in_with_passkey(key).status_code == 200
    return user, key, tabs


def _csrf(tab: PasskeyPages) -> str:
    return csrf_token(tab.browser.get("/account").text)


def _remove(browser: FlaskClient, credential_id: str, token: str) -> Callable[[], int]:
    form = {"csrf_token": token, "confirm": "yes"}
    return lambda: browser.post(f"/account/passkeys/{credential_id}/remove", data=form).status_code


def test_two_tabs_removing_the_last_two_passkeys_at_once_leave_one(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A passwordless user removes one passkey in each tab at once: the first goes, the second
    is refused as the last way in."""
    user_id, tabs, [first_id, second_id] = _passwordless_with_two_passkeys(storage_app)
    tokens = [_csrf(tab) for tab in tabs]
    answers = held_together(storage_app, checkpoints,
                           _remove(tabs[0].browser, first_id, tokens[0]),
                           _remove(tabs[1].browser, second_id, tokens[1]))  # fmt: skip
    assert answers == (302, 302)
    assert "only way to sign in" in tabs[1].browser.get("/account").text
    left = rows(storage_app, Passkey, Passkey.user_id == user_id)
    assert [p.credential_id for p in left] == [second_id]


def test_removing_the_password_and_the_last_passkey_at_once_leaves_one(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    user, key, tabs = _two_tabs_signed_in_with_a_passkey(storage_app)
    [credential_id] = key.credential_ids()
    tokens = [_csrf(tab) for tab in tabs]

    def remove_password() -> int:
        data = {"csrf_token": tokens[1], "confirm": "yes"}
        return tabs[1].browser.post("/account/password/remove", data=data).status_code

    held_together(storage_app, checkpoints,
                 _remove(tabs[0].browser, credential_id, tokens[0]), remove_password)  # fmt: skip
    [stored] = rows(storage_app, User, User.id == user.id)
    left = rows(storage_app, Passkey, Passkey.user_id == user.id)
    assert stored.password_hash is not None
    assert left == []


def test_two_tabs_removing_one_passkey_at_once_remove_and_announce_it_once(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Both tabs show the same passkey's Remove button: it is removed once, audited once and the
    user is told once (a second "passkey removed" mail would announce a removal that did not
    happen)."""
    user_id, tabs, [first_id, _second_id] = _passwordless_with_two_passkeys(storage_app)
    tokens = [_csrf(tab) for tab in tabs]
    told = len(rows(storage_app, OutboxMessage, OutboxMessage.kind == "method_removed"))
    answers = held_together(storage_app, checkpoints,
                           _remove(tabs[0].browser, first_id, tokens[0]),
                           _remove(tabs[1].browser, first_id, tokens[1]))  # fmt: skip
    assert answers == (302, 302)
    assert [p.credential_id for p in rows(storage_app, Passkey, Passkey.user_id == user_id)] == [
        _second_id
    ]
    removed = rows(storage_app, AuditEvent, AuditEvent.kind == "passkey.removed")
    assert [e.details["credential_id"] for e in removed] == [first_id]
    notices = rows(storage_app, OutboxMessage, OutboxMessage.kind == "method_removed")
    assert len(notices) == told + 1


@pytest.mark.parametrize("other", ["another admin", "the user"])
def test_a_console_removal_racing_another_removal_of_the_passkey_audits_and_announces_it_once(
    storage_app: Flask, checkpoints: Checkpoints, other: str
) -> None:
    """An admin removes a user's passkey in the console while another admin does too (both held
    where they read it, ``CONSOLE_CHECKPOINT``, then let go together), or while the user removes
    it in the portal (the console held there until the portal's removal committed). The console
    goes the portal's way (``remove_passkey``), whose row count decides: one removal is audited
    and announced, the other neither, and neither is a refusal or an error. The console's plain
    DELETE had failed with a 500, or audited and announced both."""
    user_id, tabs, [first_id, second_id] = _passwordless_with_two_passkeys(storage_app)
    admins = [passkey_browser(storage_app, f"{name}@example.com") for name in ("root", "ops")]
    told = len(rows(storage_app, OutboxMessage, OutboxMessage.kind == "method_removed"))
    tokens = [admin.csrf() for admin in admins]

    def console(which: int) -> Callable[[], int]:
        data = {"csrf_token": tokens[which], "credential_id": first_id, "confirm": "yes"}
        page = f"/admin/users/{user_id}/passkeys/revoke"
        return lambda: admins[which].browser.post(page, data=data).status_code

    if other == "another admin":
        answers = held_together(storage_app, checkpoints, console(0), console(1),
                               at=CONSOLE_CHECKPOINT)  # fmt: skip
        assert answers == (303, 303)
    else:  # the user's tab signed in with that passkey: signed out, to the sign-in page
        portal, outcome = _remove(tabs[0].browser, first_id, _csrf(tabs[0])), []
        after = answered_while_held(checkpoints, CONSOLE_CHECKPOINT, console(0),
                                    lambda: outcome.append(portal()))  # fmt: skip
        assert (outcome, after) == ([302], 303)
    left = rows(storage_app, Passkey, Passkey.user_id == user_id)
    assert [p.credential_id for p in left] == [second_id]
    kinds = ("admin.passkey_revoked", "passkey.removed", "admin.action_refused")
    audited = rows(storage_app, AuditEvent, AuditEvent.kind.in_(kinds))
    assert [(e.kind in kinds[:2], e.details["credential_id"]) for e in audited] == [
        (True, first_id)
    ]
    notices = rows(storage_app, OutboxMessage, OutboxMessage.kind == "method_removed")
    assert len(notices) == told + 1


def test_a_first_passkey_and_a_first_app_added_at_once_show_one_set_of_backup_codes_that_works(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The account's first passkey or authenticator app brings its first backup codes. A passkey
    added in one tab while the other confirmed an app each found no codes and each made a set:
    the second voided the first, which its tab had just shown as the codes to keep. The user's
    row is locked: one tab shows the codes, the other none, and the codes shown work."""
    user = create_user(storage_app)
    tabs = [PasskeyPages(storage_app.test_client()), PasskeyPages(storage_app.test_client())]
    for tab in tabs:
        tab.sign_in_with_password(user)
    setup = tabs[1].browser.get("/account/totp")
    secret = TOTP_SECRET.search(setup.text)
    assert secret, setup.text
    confirm = {"csrf_token": csrf_token(setup.text), "code": pyotp.TOTP(secret.group(1)).now()}
    first, second = held_together(
        storage_app, checkpoints, lambda: tabs[0].add_passkey(synced()),
        lambda: tabs[1].browser.post("/account/totp", data=confirm), at=FIRST_SET_CHECKPOINT,
    )  # fmt: skip
    assert first.status_code == 201, first.text
    assert second.status_code in (200, 302), second.text
    shown = [first.get_json()["backup_codes"], BACKUP_CODE.findall(second.text)]
    assert sorted(len(codes) for codes in shown) == [0, 10], shown
    codes = shown[0] or shown[1]
    recovery = storage_app.test_client()
    page = recovery.get("/login/recover")
    form = {"csrf_token": csrf_token(page.text), "email": user.email, "code": codes[-1]}
    assert recovery.post("/login/recover", data=form).status_code == 302


def test_two_tabs_getting_new_backup_codes_at_once_leave_one_set_the_last_shown(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """With "Get new backup codes" pressed in two tabs at once (or twice, a double submit), each
    deleted the codes it saw and added ten. On PostgreSQL the second's DELETE, which waited for
    the first's, did not see the first's new codes, so twenty stayed live, among them a set the
    user may never have seen (the browser shows only the last answer of a double submit), while
    each page said the codes before it stopped working. The user's row is locked first: one set
    stays, the one the last answer shows."""
    user, _key, tabs = _two_tabs_signed_in_with_a_passkey(storage_app)
    tokens = [_csrf(tab) for tab in tabs]

    def regenerate(tab: int) -> Callable[[], Any]:
        form = {"csrf_token": tokens[tab], "confirm": "yes"}
        return lambda: tabs[tab].browser.post("/account/backup-codes", data=form)

    first, second = held_together(storage_app, checkpoints, regenerate(0), regenerate(1),
                                 at=REGENERATE_CHECKPOINT)  # fmt: skip
    assert (first.status_code, second.status_code) == (200, 200)
    shown = [BACKUP_CODE.findall(first.text), BACKUP_CODE.findall(second.text)]
    assert [len(codes) for codes in shown] == [10, 10]
    live = rows(storage_app, BackupCode,
                BackupCode.user_id == user.id, BackupCode.consumed_at.is_(None))  # fmt: skip
    assert len(live) == 10
    # The set that committed last is the one that works; the other is void.
    works = [_recovers(storage_app, user.email, codes[0]) for codes in shown]
    assert sorted(works) == [False, True], works


def _recovers(app: Flask, email: str, code: str) -> bool:
    browser = app.test_client()
    page = browser.get("/login/recover")
    form = {"csrf_token": csrf_token(page.text), "email": email, "code": code}
    return browser.post("/login/recover", data=form).status_code == 302


def test_two_browsers_setting_up_an_authenticator_app_at_once_keep_one_and_no_error(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Two browsers of one user each show the set-up page (each its own key) and confirm at
    once: each found no app and stored its own, and the second's INSERT failed on the first's
    row (a 500). The user's row is locked before the app is read: the first is kept and says so,
    the second finds it and is sent back to the account page (an app is replaced only by
    removing it first, or from a recovery session)."""
    user = create_user(storage_app)
    tabs = [PasskeyPages(storage_app.test_client()), PasskeyPages(storage_app.test_client())]
    forms, secrets = [], []
    for tab in tabs:
        tab.sign_in_with_password(user)
        setup = tab.browser.get("/account/totp")
        secret = TOTP_SECRET.search(setup.text)
        assert secret, setup.text
        secrets.append(secret.group(1))
        forms.append({"csrf_token": csrf_token(setup.text),
                      "code": pyotp.TOTP(secret.group(1)).now()})  # fmt: skip
    assert secrets[0] != secrets[1]
    first, second = held_together(
        storage_app, checkpoints,
        lambda: tabs[0].browser.post("/account/totp", data=forms[0]),
        lambda: tabs[1].browser.post("/account/totp", data=forms[1]), at=TOTP_CHECKPOINT,
    )  # fmt: skip
    assert first.status_code == 200, first.text  # the app added, with the first backup codes
    assert second.status_code == 302, second.text
    assert second.headers["Location"] == "/account"
    assert "already set up" in tabs[1].browser.get("/account").text
    [stored] = rows(storage_app, TotpCredential, TotpCredential.user_id == user.id)
    with storage_app.app_context():
        kept = storage_app.extensions["idp"].totp_fernet.decrypt(stored.secret_encrypted.encode())
    assert kept.decode() == secrets[0]
