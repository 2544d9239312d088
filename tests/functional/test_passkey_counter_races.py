"""Two assertions of one device-bound passkey verified at once (WebAuthn L3 6.1.1 and 7.2's
signCount step: a signature counter that does not increase signals a possible clone): real parallel
requests on SQLite and PostgreSQL, the first held where its counter was checked
(idp.services.passkey_counter.CHECKPOINT) while the second read the same stored count and either
checked it too (PostgreSQL) or waits for the first's write lock (SQLite). Never a sleep."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from sqlalchemy import delete

from idp.extensions import db
from idp.models import AuditEvent, BrowserSession, Passkey
from idp.services.passkey_counter import CHECKPOINT
from idp.services.passkey_records import LOADED
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.factories import create_user, rows
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import waits_for_a_lock


def _registered(app: Flask, key: SoftAuthenticator) -> str:
    """A user who signed in with a password and added ``key`` as their passkey: its id."""
    owner = PasskeyPages(app.test_client())
    owner.sign_in_with_password(create_user(app))
    assert owner.add_passkey(key).status_code == 201
    [credential_id] = key.credential_ids()
    return credential_id


def test_a_clone_racing_the_real_key_with_the_same_count_is_flagged(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The real key and a clone of it answer two sign-in pages at once with the same count,
    above the stored one. Both read the stored count before either wrote: the counter is raised
    only where it is still below the new count, so one of them finds it raised already, which is
    the regression it is (flagged, audited, refused), never two sign-ins and an unnoticed clone."""
    key = SoftAuthenticator(backup_eligible=False, backed_up=False, counter_step=1)
    credential_id = _registered(storage_app, key)
    assert PasskeyPages(storage_app.test_client()).sign_in_with_passkey(key).status_code == 200

    tabs = [PasskeyPages(storage_app.test_client()) for _ in range(2)]
    posts = []
    for tab in tabs:
        ceremony, csrf = tab.page_ceremony()
        body = {"challenge_id": ceremony["challenge_id"], "next": "", "request": "",
                "credential": key.get(ceremony["publicKey"], counter=2)}  # fmt: skip
        posts.append((tab, body, csrf))
    outcome: dict[int, Any] = {}

    def run(index: int) -> threading.Thread:
        tab, body, csrf = posts[index]

        def target() -> None:
            try:
                outcome[index] = tab.browser.post(
                    "/login/passkey/verify", json=body, headers={"X-CSRFToken": csrf}
                ).status_code
            except Exception as error:  # reported in the test's thread
                outcome[index] = error

        thread = threading.Thread(target=target)
        thread.start()
        return thread

    with checkpoints.holding(CHECKPOINT):
        first = run(0)
        wait_until(lambda: checkpoints.arrivals(CHECKPOINT) == 1 or not first.is_alive(),
                   "the first sign-in checked its counter")  # fmt: skip
        assert first.is_alive(), outcome
        second = run(1)
        wait_until(lambda: checkpoints.arrivals(CHECKPOINT) == 2
                   or waits_for_a_lock(storage_app, second) or not second.is_alive(),
                   "the second sign-in read the count too")  # fmt: skip
        assert second.is_alive(), outcome
    for thread in (first, second):
        thread.join(60)
        assert not thread.is_alive()

    assert sorted(outcome.values()) == [200, 400], outcome
    [stored] = rows(storage_app, Passkey, Passkey.credential_id == credential_id)
    assert (stored.sign_count, stored.flagged_reason) == (2, "sign_count_regression")
    flagged = rows(storage_app, AuditEvent, AuditEvent.kind == "passkey.flagged")
    assert [(e.details["stored_count"], e.details["received_count"]) for e in flagged] == [(2, 2)]


def test_a_synced_passkey_removed_while_a_sign_in_read_it_signs_nobody_in(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A sign-in read the passkey, then its owner removed it (a lost phone) before the sign-in
    stored its use: the UPDATE of a synced passkey's record, which any count matches, matched no
    row, and the sign-in is refused, never a session of a passkey that no longer exists (WebAuthn
    L3 7.2: the credential must be registered)."""
    phone = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    credential_id = _registered(storage_app, phone)
    tab = PasskeyPages(storage_app.test_client())
    ceremony, csrf = tab.page_ceremony()
    body = {"challenge_id": ceremony["challenge_id"], "next": "", "request": "",
            "credential": phone.get(ceremony["publicKey"])}  # fmt: skip
    outcome: dict[str, Any] = {}

    def sign_in() -> None:
        try:
            outcome["status"] = tab.browser.post(
                "/login/passkey/verify", json=body, headers={"X-CSRFToken": csrf}
            ).status_code
        except Exception as error:  # reported in the test's thread
            outcome["status"] = error

    with checkpoints.holding(LOADED):
        thread = threading.Thread(target=sign_in)
        thread.start()
        wait_until(lambda: checkpoints.arrivals(LOADED) == 1 or not thread.is_alive(),
                   "the sign-in read the passkey")  # fmt: skip
        assert thread.is_alive(), outcome
        with storage_app.app_context():  # the removal, committed while the sign-in waits
            db.session.execute(delete(Passkey).where(Passkey.credential_id == credential_id))
            db.session.commit()
    thread.join(60)
    assert not thread.is_alive()

    assert outcome == {"status": 400}
    assert rows(storage_app, BrowserSession, BrowserSession.credential_id == credential_id) == []
    [refused] = rows(storage_app, AuditEvent, AuditEvent.kind == "login.passkey")
    assert (refused.outcome, refused.details["reason"]) == ("failure", "unknown_credential")
