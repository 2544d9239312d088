"""A one-time link issued as its user, or its issuer, is disabled (docs/security.md, "Admin
API"): real parallel requests on SQLite and PostgreSQL, the link's request held where it
is about to hold its issuer's and user's rows (idp.services.user_admin.HOLD_CHECKPOINT) while
another admin disables. Never a sleep: the test waits for arrivals, finished requests and a
waiting lock."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

import idp
from idp.api.users import ACTING_CHECKPOINT
from idp.cli import main
from idp.models import AuditEvent, LoginLink, User
from idp.models.base import utcnow
from idp.services.login_links import ISSUE_CHECKPOINT
from idp.services.user_admin import HOLD_CHECKPOINT
from tests.functional.test_api import Api, issue
from tests.functional.test_link_issuers import ISSUED, _console_invite, _console_link, _opens
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.checkpoints import Checkpoints
from tests.support.factories import change, create_user, rows
from tests.support.writers import race_held


def _live_links(app: Flask, user_id: str) -> list[LoginLink]:
    return rows(app, LoginLink, LoginLink.user_id == user_id,
                LoginLink.consumed_at.is_(None), LoginLink.revoked_at.is_(None))  # fmt: skip


def _issuer(surface: str, app: Flask, ada: ConsoleBrowser, user: Any) -> Callable[[], Any]:
    """The request that issues a rescue link for ``user`` on ``surface``: it answers the path
    of the link, or None when it was refused."""
    helpdesk = Api(app, issue(app, "login-links:write", name="helpdesk"))

    def console() -> str | None:
        answer = ada.post(f"/admin/users/{user.id}/login-link", {"ttl": "86400"})
        found = ISSUED.search(answer.text) if answer.status_code == 200 else None
        assert found is not None or answer.status_code == 303, answer.text
        return found.group(1).removeprefix("http://localhost") if found else None

    def api() -> str | None:
        answer = helpdesk.call("POST", f"/users/{user.id}/login-links")
        assert answer.status_code in (201, 400), answer.text
        url = answer.get_json()["url"] if answer.status_code == 201 else None
        return url.removeprefix("http://localhost") if url else None

    def cli() -> str | None:
        # ``idp login-link EMAIL`` against this app (``create_app`` answers it).
        result = CliRunner().invoke(main, ["login-link", user.email, "--json"])
        assert result.exit_code in (0, 1), result.output
        if result.exit_code != 0:
            return None
        return "/login/link/" + json.loads(result.stdout)["url"].rsplit("/", 1)[1]

    return {"console": console, "api": api, "cli": cli}[surface]


@pytest.mark.parametrize("held", [HOLD_CHECKPOINT, ISSUE_CHECKPOINT])
@pytest.mark.parametrize("surface", ["console", "api", "cli"])
def test_a_link_issued_as_its_user_is_disabled_does_not_outlive_the_disable(
    storage_app: Flask,
    checkpoints: Checkpoints,
    monkeypatch: pytest.MonkeyPatch,
    surface: str,
    held: str,
) -> None:
    """The link's request read the user active; a disable commits before it writes. Checked on
    that read, the link was inserted after the disable had ended the links it could see (READ
    COMMITTED on PostgreSQL): a disabled user's live link, which worked again once the account
    was enabled. The issue must hold the user's row and read it anew (refused), or hold it from
    before the disable (which then waits for it and ends it); enabling ends none back to life.
    Held before its locks (the disable commits first) and after them (the disable waits)."""
    monkeypatch.setattr(idp, "create_app", lambda: storage_app)  # the CLI's app: this one
    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    member = create_user(storage_app, email="member@example.com")
    issuing = _issuer(surface, storage_app, ada, member)
    disabled = f"/admin/users/{member.id}/disable"
    outcome = race_held(storage_app, checkpoints, held, ("link", issuing),
                        ("disable", lambda: root.post(disabled, {})))  # fmt: skip
    assert outcome["disable"].status_code == 303, outcome["disable"].text
    assert _live_links(storage_app, member.id) == []

    enabled = root.post(f"/admin/users/{member.id}/enable", {})
    assert enabled.status_code == 303, enabled.text
    assert _live_links(storage_app, member.id) == []
    if outcome["link"] is not None:  # issued before the disable, which ended it
        assert not _opens(storage_app, outcome["link"])


def test_enabling_an_account_ends_a_link_that_survived_its_disabling(storage_app: Flask) -> None:
    """Defence in depth: a link still unspent when the account is enabled was issued before the
    disable by a path that missed it (none is issued to a disabled user); it ends with the
    enable, audited, rather than rescue the account from before."""
    root = passkey_browser(storage_app, "root@example.com")
    member = create_user(storage_app, email="member@example.com")
    path = _console_link(root, member.id)
    # The disable as a path that missed the link leaves it: the account's flag alone.
    change(storage_app, User.__table__.update().where(User.id == member.id)
           .values(disabled_at=utcnow() - timedelta(minutes=1)))  # fmt: skip
    assert len(_live_links(storage_app, member.id)) == 1

    enabled = root.post(f"/admin/users/{member.id}/enable", {})

    assert enabled.status_code == 303, enabled.text
    assert _live_links(storage_app, member.id) == []
    assert not _opens(storage_app, path)
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "admin.user_enabled")
    assert event.details["links_revoked"] == 1


def test_a_reinvite_racing_its_issuers_disable_takes_the_locks_in_the_disables_order(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A reinvite ended the older invites (their rows locked) before it held its admin's row; a
    disable of that admin holds the admins' rows, then ends the links the admin issued, those
    invites among them: each waited for the other, a deadlock on PostgreSQL (one of them a 503).
    The reinvite takes its admin's row first, as the disable does: it waits, or is refused on the
    admin the disable left, and the disable ends every invite the admin issued."""
    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    older = _console_invite(ada, "grace@example.com")
    [grace] = rows(storage_app, User, User.email == "grace@example.com")
    path = f"/admin/users/{grace.id}/invite"
    disabled = f"/admin/users/{ada.user.id}/disable"
    outcome = race_held(storage_app, checkpoints, HOLD_CHECKPOINT,
                        ("invite", lambda: ada.post(path, {"ttl": "86400"})),
                        ("disable", lambda: root.post(disabled, {})))  # fmt: skip
    assert outcome["disable"].status_code == 303, outcome["disable"].text
    # Issued before the disable (then ended by it: 200) or refused on the disabled admin (303).
    assert outcome["invite"].status_code in (200, 303), outcome["invite"].text
    assert _live_links(storage_app, grace.id) == []
    assert not _opens(storage_app, older)


def test_a_console_link_racing_a_users_write_disable_of_its_user_is_no_deadlock(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A ``users:write`` token's disable holds the member's row from its read (idp.api.users), and
    took the active admins' rows after it; the console's link holds its admin's row, then the
    member's: each waited for the other on PostgreSQL (a deadlock, one of them a 503). A member's
    disable holds no admin's row (only the last-admin rule needs them): the link waits for the
    disable and is refused on the disabled member (real parallel requests on SQLite and
    PostgreSQL, the disable held once it holds the member)."""
    passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    member = create_user(storage_app, email="member@example.com")
    users = Api(storage_app, issue(storage_app, "users:write", name="users"))
    issuing = _issuer("console", storage_app, ada, member)
    path = f"/users/{member.id}/disable"
    outcome = race_held(storage_app, checkpoints, ACTING_CHECKPOINT,
                        ("disable", lambda: users.call("POST", path)),
                        ("link", issuing))  # fmt: skip
    assert outcome["disable"].status_code == 200, outcome["disable"].text
    assert outcome["link"] is None  # refused on the member the disable left
    assert _live_links(storage_app, member.id) == []
