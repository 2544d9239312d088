"""A rescue link issued while its user is promoted (docs/api.md, ``login-links:write``): real
parallel requests on SQLite and PostgreSQL, the link's request held where it decided whom it
rescues (idp.services.login_links.ISSUE_CHECKPOINT) while an admin promotes that user, to its
commit. Never a sleep: the test waits for arrivals, finished requests and a waiting lock."""

from __future__ import annotations

from typing import Any

from flask import Flask

from idp.models import LoginLink
from idp.services.login_links import ISSUE_CHECKPOINT
from tests.functional.test_api import Api, issue
from tests.support.checkpoints import Checkpoints, in_thread, wait_until
from tests.support.factories import create_user, rows
from tests.support.flow import csrf_token
from tests.support.writers import waits_for_a_lock

WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim


def test_a_rescue_link_issued_as_its_user_is_promoted_does_not_sign_in_the_admin(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A help-desk token (``login-links:write`` only) may rescue a member, never an admin, and a
    promotion ends the member's unspent rescue links. A link whose request saw a member, then
    was inserted after the promotion had ended the links it could see, was a live rescue link
    for an admin from a token that may not make one. The link's request must hold the user's
    row from before it decides to its commit: the promotion waits for it and ends it."""
    create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    outcome: dict[str, Any] = {}

    with checkpoints.holding(ISSUE_CHECKPOINT):
        issued = f"/users/{member.id}/login-links"
        link = in_thread(outcome, "link", lambda: helpdesk.call("POST", issued))
        wait_until(lambda: checkpoints.arrivals(ISSUE_CHECKPOINT) >= 1 or not link.is_alive(),
                   "the link's request reached its checkpoint")  # fmt: skip
        assert link.is_alive(), outcome
        promoted = {"admin": True}
        promote = in_thread(
            outcome, "promote", lambda: ops.call("PATCH", f"/users/{member.id}", promoted)
        )
        wait_until(lambda: not promote.is_alive() or waits_for_a_lock(storage_app, promote),
                   "the promotion committed or waits for the link's lock")  # fmt: skip
    for thread in (link, promote):
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    assert "link error" not in outcome, outcome
    assert "promote error" not in outcome, outcome
    assert outcome["promote"].get_json()["admin"] is True, outcome["promote"].text

    live = rows(storage_app, LoginLink, LoginLink.user_id == member.id,
                LoginLink.consumed_at.is_(None), LoginLink.revoked_at.is_(None))  # fmt: skip
    assert live == []
    if outcome["link"].status_code == 201:
        secret = outcome["link"].get_json()["url"].rsplit("/", 1)[1]
        browser = storage_app.test_client()
        page = browser.get(f"/login/link/{secret}")
        if page.status_code == 200:
            form = {"csrf_token": csrf_token(page.text)}
            page = browser.post(f"/login/link/{secret}", data=form)
        assert page.status_code == 400
    else:  # it saw the admin the member became
        assert outcome["link"].status_code == 403, outcome["link"].text
