"""The work the password step does tells no one whether an email has an account, a password, a
second step or is disabled (OWASP ASVS 4.0 2.2.1 and the Authentication Cheat Sheet, "Login
Throttling" and "Authentication Responses": the same response and the same work). Counted, never
timed: the Argon2id verifications and the SQL statements each attempt runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import event, update

from idp.extensions import db
from idp.models import User
from idp.services.passwords import PasswordService
from tests.support.factories import change, create_user
from tests.support.flow import csrf_token

#: The attempts are told apart by their statements, which must not depend on the clock: the sign-in
#: policy the page read stays trusted for the post that follows it, however long the machine takes
#: in between (tests/conftest.py ``node_caches_held``).
pytestmark = pytest.mark.usefixtures("node_caches_held")

#: A bound value differs from one attempt to the next; the statement's text does not.
_SPACES = re.compile(r"\s+")


@contextmanager
def statements_run(app: Flask) -> Iterator[list[str]]:
    with app.app_context():
        engine = db.engine
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(_SPACES.sub(" ", statement))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_wrong_password_costs_the_same_work_whatever_the_account(
    storage_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Argon2id verification and the same statements, in the same order, for an unknown
    email, an account with no password (passkeys only), a disabled account and a wrong
    password: an unknown email skipping the hash, or an account's methods read only when it
    exists, would tell them apart by the time the answer takes. SQLite and PostgreSQL."""
    app = storage_app
    create_user(app, email="known@example.com")
    create_user(app, email="passkeys-only@example.com", password=None)
    disabled = create_user(app, email="disabled@example.com")
    now = datetime.now(UTC)
    change(app, update(User).where(User.id == disabled.id).values(disabled_at=now))
    verifications: list[str] = []
    real = PasswordService._verify_quietly

    def counted(self: PasswordService, stored_hash: str, password: str) -> bool:
        verifications.append("argon2id")
        return real(self, stored_hash, password)

    monkeypatch.setattr(PasswordService, "_verify_quietly", counted)
    work = {}
    for email in ("nobody@example.com", "known@example.com", "passkeys-only@example.com",
                  "disabled@example.com"):  # fmt: skip
        browser = app.test_client()
        page = browser.get("/login")
        form = {"csrf_token": csrf_token(page.text), "email": email, "password": "not it at all"}
        verifications.clear()
        with statements_run(app) as seen:
            response = browser.post("/login", data=form)
        work[email] = (response.status_code, tuple(verifications), tuple(seen))
    assert len(set(work.values())) == 1, work
    status, hashes, seen = work["nobody@example.com"]
    assert (status, hashes) == (401, ("argon2id",))
    assert seen  # counted and audited: the attempt did write
