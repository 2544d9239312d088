"""A one-time link ends with its issuer's authority (docs/admins.md, "Rescuing a user with a
one-time login link"; docs/api.md, Tokens): the unspent rescue links and invites an admin issued
in the console, or through an API token they created, are revoked when the admin is disabled,
demoted or deleted, as the tokens are. Else an admin removed from the team keeps, for up to a day,
a bearer secret to each account they rescued or invited (an admin's included), whose session adds
a passkey: the account. On SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from idp.models import AuditEvent, LoginLink, User
from idp.services.login_links import ISSUE_CHECKPOINT
from tests.functional.test_api import Api, issue
from tests.functional.test_api_token_creators import act
from tests.support.admin import ConsoleBrowser, passkey_browser
from tests.support.checkpoints import Checkpoints
from tests.support.factories import change, create_user, rows
from tests.support.writers import race_held

ISSUED = re.compile(r'<code id="issued-link"[^>]*>([^<]+)</code>')
TOKEN = re.compile(r"idp_[A-Za-z0-9_-]{43}")


def _console_link(admin: ConsoleBrowser, user_id: str) -> str:
    issued = admin.post(f"/admin/users/{user_id}/login-link", {"ttl": "86400"})
    assert issued.status_code == 200, issued.text
    found = ISSUED.search(issued.text)
    assert found is not None
    return found.group(1).removeprefix("http://localhost")


def _console_invite(admin: ConsoleBrowser, email: str) -> str:
    issued = admin.post("/admin/users/new", {"email": email, "action": "invite", "ttl": "86400"})
    assert issued.status_code == 200, issued.text
    found = ISSUED.search(issued.text)
    assert found is not None
    return found.group(1).removeprefix("http://localhost")


def _token_of(app: Flask, admin: ConsoleBrowser) -> Api:
    created = admin.post("/admin/api-tokens", {"name": "helpdesk", "expires_in": "90",
                                               "scopes": ["login-links:write"]})  # fmt: skip
    assert created.status_code == 200, created.text
    secret = TOKEN.search(created.text)
    assert secret is not None
    return Api(app, secret.group(0))


def _opens(app: Flask, path: str) -> bool:
    """Whether the link's page still offers to use it (a GET spends nothing)."""
    return app.test_client().get(path).status_code == 200


@pytest.mark.parametrize("action", ["disable", "demote", "delete"])
def test_the_links_an_admin_issued_end_when_the_admin_is_disabled_demoted_or_deleted(
    storage_app: Flask, action: str
) -> None:
    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    other_admin = create_user(storage_app, email="bob@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    hers = [_console_link(ada, other_admin.id), _console_invite(ada, "grace@example.com")]
    helpdesk = _token_of(storage_app, ada)
    by_token = helpdesk.call("POST", f"/users/{member.id}/login-links")
    assert by_token.status_code == 201, by_token.text
    hers.append(by_token.get_json()["url"].removeprefix("http://localhost"))
    # Another admin's link, for another user (a newer link for the member would end the
    # token's: idp.services.user_admin, one rescue link at a time).
    roots = _console_link(root, create_user(storage_app, email="ann@example.com").id)
    assert all(_opens(storage_app, path) for path in [*hers, roots])

    act(action, ada, root)

    assert [path for path in hers if _opens(storage_app, path)] == []
    assert _opens(storage_app, roots)  # another admin's link stays
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == f"admin.user_{action}d")
    assert event.details["issued_links_revoked"] == 3
    # Enabled or promoted again, the admin gets none of them back.
    if action == "disable":
        act("enable", ada, root)
    elif action == "demote":
        change(storage_app, User.__table__.update().where(User.id == ada.user.id)
               .values(is_admin=True))  # fmt: skip
    assert [path for path in hers if _opens(storage_app, path)] == []


def test_a_link_issued_as_its_issuer_is_disabled_does_not_outlive_them(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The console's issue holds its admin's row from before it issues to its commit (as a
    token's creation does): a disable arriving meanwhile waits for the link, then ends it with
    the others, never an UPDATE that missed a link committed after it (real parallel requests
    on SQLite and PostgreSQL, the link held where it is about to be issued)."""
    root = passkey_browser(storage_app, "root@example.com")
    ada = passkey_browser(storage_app, "ada@example.com")
    member = create_user(storage_app, email="member@example.com")
    path = f"/admin/users/{member.id}/login-link"
    disabled = f"/admin/users/{ada.user.id}/disable"
    outcome = race_held(storage_app, checkpoints, ISSUE_CHECKPOINT,
                        ("link", lambda: ada.post(path, {"ttl": "86400"})),
                        ("disable", lambda: root.post(disabled, {})))  # fmt: skip
    assert outcome["disable"].status_code == 303, outcome["disable"].text
    live = rows(storage_app, LoginLink, LoginLink.user_id == member.id,
                LoginLink.consumed_at.is_(None), LoginLink.revoked_at.is_(None))  # fmt: skip
    assert live == []
    if outcome["link"].status_code == 200:  # issued first, then ended by the disable
        found = ISSUED.search(outcome["link"].text)
        assert found is not None
        assert not _opens(storage_app, found.group(1).removeprefix("http://localhost"))
        [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "admin.user_disabled")
        assert event.details["issued_links_revoked"] == 1


def test_revoking_a_token_ends_the_links_it_issued(storage_app: Flask) -> None:
    """A leaked help-desk token is revoked: the rescue links it minted, bearer secrets of the
    accounts they name for up to a day, end with it, audited with the revocation; a link another
    token issued stays."""
    root = passkey_browser(storage_app, "root@example.com")
    # Two members: a newer link for one member would end the older one (one rescue link at a
    # time, idp.services.user_admin), whichever token issued it.
    members = [create_user(storage_app, email=f"member{n}@example.com") for n in (1, 2)]
    leaked = _token_of(storage_app, root)
    other = Api(storage_app, issue(storage_app, "login-links:write", name="other"))
    urls = [
        api.call("POST", f"/users/{member.id}/login-links").get_json()["url"]
        for api, member in zip((leaked, other), members, strict=True)
    ]
    paths = [url.removeprefix("http://localhost") for url in urls]
    assert all(_opens(storage_app, path) for path in paths)

    revoked = root.post("/admin/api-tokens/helpdesk/revoke", {})
    assert revoked.status_code == 303, revoked.text

    assert [_opens(storage_app, path) for path in paths] == [False, True]
    [event] = rows(storage_app, AuditEvent, AuditEvent.kind == "api_token.revoked")
    assert (event.details["token"], event.details["links_revoked"]) == ("helpdesk", 1)


def test_a_link_issued_as_its_token_is_revoked_does_not_outlive_it(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """The API issues a link holding its token's row: a revocation arriving meanwhile waits for
    the link, then ends it (real parallel requests on SQLite and PostgreSQL, the link held where
    it is about to be issued)."""
    root = passkey_browser(storage_app, "root@example.com")
    member = create_user(storage_app, email="member@example.com")
    helpdesk = _token_of(storage_app, root)
    path, revoking = f"/users/{member.id}/login-links", "/admin/api-tokens/helpdesk/revoke"
    outcome = race_held(storage_app, checkpoints, ISSUE_CHECKPOINT,
                        ("link", lambda: helpdesk.call("POST", path)),
                        ("revoke", lambda: root.post(revoking, {})))  # fmt: skip
    assert outcome["revoke"].status_code == 303, outcome["revoke"].text
    live = rows(storage_app, LoginLink, LoginLink.user_id == member.id,
                LoginLink.consumed_at.is_(None), LoginLink.revoked_at.is_(None))  # fmt: skip
    assert live == []
    assert outcome["link"].status_code == 201, outcome["link"].text  # held: issued first
    assert not _opens(
        storage_app, outcome["link"].get_json()["url"].removeprefix("http://localhost")
    )
