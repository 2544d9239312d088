"""What the audit log says of an email change's link (docs/security.md, "Mail and email
addresses"): the addresses before and after a change, and every refused confirmation, as every
other one-time link's refusal is. On SQLite and PostgreSQL."""

from __future__ import annotations

from flask import Flask

from idp.models import AuditEvent
from tests.functional.test_email_addresses import ask_change, confirm, mailed_link
from tests.support.factories import create_user, rows
from tests.support.flow import start_session


def _events(app: Flask, kind: str, user_id: str) -> list[tuple[str, dict[str, object]]]:
    found = rows(app, AuditEvent, AuditEvent.kind == kind, AuditEvent.subject_id == user_id)
    return [(e.outcome, dict(e.details or {})) for e in found]


def test_an_email_change_is_audited_with_both_addresses_and_its_refusals(
    storage_app: Flask,
) -> None:
    """The log names a subject by the address it has when the log is read, so a change's row
    must say which address the account had and which one took it over: else an account taken
    over by an email change reads, afterwards, as if it always had the new address. A refused
    confirmation (an ended link, another account's) is audited, as a refused login link is."""
    user = create_user(storage_app, email="ada@example.com")
    other = create_user(storage_app, email="mallory@example.com")
    browser, others_browser = storage_app.test_client(), storage_app.test_client()
    start_session(browser, user)
    start_session(others_browser, other)

    ask_change(browser, "first@new.example")
    first = mailed_link(storage_app, "first@new.example")
    ask_change(browser, "ada@new.example")  # ends the first
    link = mailed_link(storage_app, "ada@new.example")
    assert confirm(browser, first) == 400
    assert confirm(others_browser, link) == 400  # another account's link: not theirs to use
    assert confirm(browser, link) == 302

    changed = _events(storage_app, "email.changed", user.id)
    assert [(outcome, details.get("reason")) for outcome, details in changed] == [
        ("failure", "link_invalid"), ("success", None),
    ]  # fmt: skip
    assert (changed[1][1]["previous_email"], changed[1][1]["email"]) == (
        "ada@example.com", "ada@new.example",
    )  # fmt: skip
    assert _events(storage_app, "email.changed", other.id) == [
        ("failure", {"reason": "link_invalid"})
    ]
