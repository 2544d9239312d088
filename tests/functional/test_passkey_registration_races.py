"""Two registrations of one credential id at once (WebAuthn L3 7.1: "Verify that the
credentialId is not yet registered for any user"): real parallel requests on SQLite and
PostgreSQL, the first held where it found the id unregistered (idp.services.passkeys.ID_CHECKED)
while the second finds it so too or waits for the first's lock. Never a sleep."""

from __future__ import annotations

import os

from flask import Flask

from idp.models import AuditEvent, Passkey
from idp.services.passkeys import ID_CHECKED
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints
from tests.support.factories import create_user, rows
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import held_together


def test_two_users_registering_one_credential_id_at_once_store_it_once(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """Both looked the id up before either stored it: on PostgreSQL (READ COMMITTED) the second
    INSERT failed on the primary key, a 500 that rolled back its audit row and its spent
    challenge. One stores it; the other is refused as ``credential_already_registered``,
    audited, and its answer names no credential to forget (the id signs the first user in)."""
    credential_id = os.urandom(16)
    answers = []
    for email in ("ada@example.com", "bob@example.com"):
        pages = PasskeyPages(storage_app.test_client())
        pages.sign_in_with_password(create_user(storage_app, email=email))
        ceremony = pages.registration_options().get_json()
        created = SoftAuthenticator().create(ceremony["publicKey"], credential_id=credential_id)
        csrf = pages.csrf()
        body = {"challenge_id": ceremony["challenge_id"], "credential": created}

        def answer(pages: PasskeyPages = pages, body: dict = body, csrf: str = csrf) -> object:
            return pages.browser.post("/account/passkeys", json=body, headers={"X-CSRFToken": csrf})

        answers.append(answer)
    first, second = held_together(storage_app, checkpoints, answers[0], answers[1], at=ID_CHECKED)
    assert sorted([first.status_code, second.status_code]) == [201, 400], (first.text, second.text)
    refused = first if first.status_code == 400 else second
    assert refused.get_json()["error"] == "registration_failed"
    assert "unknown_credential_id" not in refused.get_json()
    stored = rows(storage_app, Passkey)
    assert len(stored) == 1
    failures = rows(storage_app, AuditEvent, AuditEvent.kind == "passkey.registered",
                    AuditEvent.outcome == "failure")  # fmt: skip
    assert [f.details.get("reason") for f in failures] == ["credential_already_registered"]
    assert [f.subject_id for f in failures] != [stored[0].user_id]
