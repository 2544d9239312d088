"""A newer one-time link stands in for the older ones (docs/admins.md, "Rescuing a user with a
one-time login link"): a rescue link issued for a user, in the console, through the API or the
CLI, ends that user's older unspent rescue links, audited; other users' links stay. On SQLite and
PostgreSQL."""

from __future__ import annotations

import re

from flask import Flask

from idp.models import AuditEvent, BrowserSession
from tests.functional.test_api import Api, issue
from tests.functional.test_promotion_ends_restricted_sessions import (
    _no_passkey_added,
    _spend_rescue_link,
)
from tests.support.admin import passkey_browser
from tests.support.factories import create_user, rows
from tests.support.flow import csrf_token
from tests.support.passkey_flow import PasskeyPages

ISSUED = re.compile(r'<code id="issued-link"[^>]*>([^<]+)</code>')


def _opens(app: Flask, path: str) -> bool:
    """Whether the link's page still offers to use it (a GET spends nothing)."""
    return app.test_client().get(path).status_code == 200


def _spends(app: Flask, path: str) -> int:
    browser = app.test_client()
    form = {"csrf_token": csrf_token(browser.get("/login").text)}
    return browser.post(path, data=form).status_code


def test_a_newer_rescue_link_ends_the_older_unspent_ones(storage_app: Flask) -> None:
    """The admin sent a link that did not arrive (or went to the wrong chat) and sends another:
    the first one, waiting in a mailbox or a chat for up to a day, must no longer sign anyone in
    as the user, whoever issued it; another user's link stays."""
    root = passkey_browser(storage_app, "root@example.com")
    member = create_user(storage_app, email="member@example.com")
    other = create_user(storage_app, email="other@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))

    def console_link(user_id: str) -> str:
        issued = root.post(f"/admin/users/{user_id}/login-link", {"ttl": "86400"})
        assert issued.status_code == 200, issued.text
        found = ISSUED.search(issued.text)
        assert found is not None
        return found.group(1).removeprefix("http://localhost")

    def api_link(user_id: str) -> str:
        issued = helpdesk.call("POST", f"/users/{user_id}/login-links")
        assert issued.status_code == 201, issued.text
        return str(issued.get_json()["url"]).removeprefix("http://localhost")

    first, others = console_link(member.id), console_link(other.id)
    assert _opens(storage_app, first)
    # Another issuer, another surface: the older link ends all the same.
    second = api_link(member.id)
    assert not _opens(storage_app, first)
    assert _spends(storage_app, first) == 400
    third = console_link(member.id)
    assert not _opens(storage_app, second)
    assert _opens(storage_app, third)
    assert _opens(storage_app, others)
    assert _spends(storage_app, third) == 302  # the newest signs in (a passkey comes first)

    ended = rows(storage_app, AuditEvent, AuditEvent.kind == "login_link.revoked",
                 AuditEvent.subject_id == member.id)  # fmt: skip
    assert [(e.details or {}).get("reason") for e in ended] == ["superseded", "superseded"]
    assert [(e.details or {}).get("links") for e in ended] == [1, 1]
    assert rows(storage_app, AuditEvent, AuditEvent.kind == "login_link.revoked",
                AuditEvent.subject_id == other.id) == []  # fmt: skip


def test_a_newer_rescue_link_ends_the_restricted_session_an_older_one_opened(
    storage_app: Flask,
) -> None:
    """The older link went to the wrong chat and was spent there: its holder has a restricted
    session whose one way forward, adding a passkey, is the account. The admin's newer link
    stands in for it: that session ends too (counted in ``login_link.revoked``), and the user's
    own backup-code recovery would be left alone (only a link's ``passkey_only`` session ends)."""
    root = passkey_browser(storage_app, "root@example.com")
    member = create_user(storage_app, email="member@example.com")
    helpdesk = Api(storage_app, issue(storage_app, "login-links:write", name="helpdesk"))
    older = helpdesk.call("POST", f"/users/{member.id}/login-links")
    assert older.status_code == 201, older.text
    holder = PasskeyPages(storage_app.test_client())
    assert _spend_rescue_link(holder.browser, older.get_json()["url"]) == 302
    assert holder.browser.get("/account/recover").status_code == 200  # may add a passkey

    newer = root.post(f"/admin/users/{member.id}/login-link", {"ttl": "86400"})
    assert newer.status_code == 200, newer.text

    _no_passkey_added(storage_app, holder, member.id)
    [session] = rows(storage_app, BrowserSession, BrowserSession.user_id == member.id)
    assert session.revoked_at is not None
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "login_link.revoked")
    assert (event.details["reason"], event.details["sessions_ended"]) == ("superseded", 1)
