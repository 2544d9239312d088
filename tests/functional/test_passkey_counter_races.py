"""Two assertions of one device-bound passkey verified at once (WebAuthn L3 6.1.1 and 7.2's
signCount step: a signature counter that does not increase signals a possible clone): real parallel
requests on SQLite and PostgreSQL, the first held where its counter was checked
(idp.services.passkey_counter.CHECKPOINT) while the second read the same stored count and either
checked it too (PostgreSQL) or waits for the first's write lock (SQLite). Never a sleep."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask

from idp.models import AuditEvent, Passkey
from idp.services.passkey_counter import CHECKPOINT
from tests.support.authenticator import SoftAuthenticator
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.factories import create_user, rows
from tests.support.passkey_flow import PasskeyPages
from tests.support.writers import waits_for_a_lock


def test_a_clone_racing_the_real_key_with_the_same_count_is_flagged(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The real key and a clone of it answer two sign-in pages at once with the same count,
    above the stored one. Both read the stored count before either wrote: the counter is raised
    only where it is still below the new count, so one of them finds it raised already, which is
    the regression it is (flagged, audited, refused), never two sign-ins and an unnoticed clone."""
    user = create_user(storage_app)
    key = SoftAuthenticator(backup_eligible=False, backed_up=False, counter_step=1)
    owner = PasskeyPages(storage_app.test_client())
    owner.sign_in_with_password(user)
    assert owner.add_passkey(key).status_code == 201
    [credential_id] = key.credential_ids()
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
