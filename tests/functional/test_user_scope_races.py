"""A ``users:write`` change racing an admin's promotion of its user (docs/api.md: ``users:write``
acts only on users who are not admins): real parallel requests on SQLite and PostgreSQL, the
API's change held where it decided the user is no admin (idp.api.users.ACTING_CHECKPOINT) while
the console promotes that user, to its commit. Never a sleep: the test waits for arrivals,
finished requests and a waiting lock."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from idp.api.users import ACTING_CHECKPOINT
from idp.models import AuditEvent, User
from tests.functional.test_api import Api, issue
from tests.support.admin import passkey_browser
from tests.support.checkpoints import Checkpoints, in_thread, wait_until
from tests.support.factories import create_user, rows
from tests.support.writers import waits_for_a_lock

WAIT_LIMIT = 60.0  # a stuck test fails instead of hanging; never a timing claim

#: The change a ``users:write`` token makes, and the audit event it writes.
CHANGES = {
    "rename": ("PATCH", "", {"name": "Renamed"}, "admin.user_renamed"),
    "disable": ("POST", "/disable", None, "admin.user_disabled"),
    "delete": ("DELETE", "", None, "admin.user_deleted"),
}


#: Who promotes the member while a ``users:write`` change of them is in flight, and the status
#: of a promotion written: an admin in the console, or a token with ``admins:write``.
PROMOTERS = {"console": 303, "api": 200}


@pytest.mark.parametrize("promoter", sorted(PROMOTERS))
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_users_write_change_racing_a_promotion_never_changes_an_admin(
    storage_app: Flask, checkpoints: Checkpoints, change: str, promoter: str
) -> None:
    """The token's request read the user as a member, then an admin (the console) or an
    ``admins:write`` token (the API) promoted them, then the request wrote its change: an admin
    renamed, disabled or deleted by a token that may not touch admins. The request must hold the
    user's row from its check to its commit: the promotion waits for it (and, reading the row
    held too, finds a deleted user gone: a 404, never a 500), or came first and is refused."""
    admin = passkey_browser(storage_app, "root@example.com")
    member = create_user(storage_app, email="member@example.com")
    ci = Api(storage_app, issue(storage_app, "users:write", name="ci"))
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    method, tail, body, event = CHANGES[change]
    outcome: dict[str, Any] = {}

    def promotion() -> Any:
        if promoter == "api":
            return ops.call("PATCH", f"/users/{member.id}", {"admin": True})
        return admin.post(f"/admin/users/{member.id}/promote")

    with checkpoints.holding(ACTING_CHECKPOINT):
        changing = in_thread(
            outcome, "change", lambda: ci.call(method, f"/users/{member.id}{tail}", body)
        )
        wait_until(lambda: checkpoints.arrivals(ACTING_CHECKPOINT) >= 1 or not changing.is_alive(),
                   "the change reached its checkpoint")  # fmt: skip
        assert changing.is_alive(), outcome
        promote = in_thread(outcome, "promote", promotion)
        # An API promotion that read the row unheld would pass its own checkpoint (a second
        # arrival) and write on the user as it was: the assertions below tell.
        wait_until(lambda: not promote.is_alive() or waits_for_a_lock(storage_app, promote)
                   or checkpoints.arrivals(ACTING_CHECKPOINT) >= 2,
                   "the promotion committed or waits for the change's lock")  # fmt: skip
    for thread in (changing, promote):
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    assert "change error" not in outcome, outcome
    assert "promote error" not in outcome, outcome

    kinds = (event, "admin.user_promoted")
    events = rows(storage_app, AuditEvent, AuditEvent.subject_id == member.id,
                  AuditEvent.kind.in_(kinds))  # fmt: skip
    order = [e.kind for e in sorted(events, key=lambda e: e.id)]
    if outcome["change"].status_code == 403:  # it saw the admin the member became
        assert order == ["admin.user_promoted"]
        assert rows(storage_app, User, User.id == member.id)[0].is_admin
        return
    assert outcome["change"].status_code in (200, 204), outcome["change"].text
    if change == "delete":
        # The promotion waited for the deletion and found no user: a 404, never a 500.
        assert outcome["promote"].status_code == 404, outcome["promote"].text
        assert order == [event]
    else:
        # The change was written while the user was a member, the promotion after it.
        assert outcome["promote"].status_code == PROMOTERS[promoter], outcome["promote"].text
        assert order == [event, "admin.user_promoted"]


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_users_write_change_during_an_api_promotion_waits_for_it_and_is_refused(
    storage_app: Flask, checkpoints: Checkpoints, change: str
) -> None:
    """docs/api.md: ``users:write`` acts only on users who are not admins. An ``admins:write``
    token's promotion (``PATCH admin: true``) holds the user's row from its read to its commit,
    as a ``users:write`` change does (``_user_to_change(promotion=True)``): held where it is
    about to write, a ``users:write`` change of that user waits for it, then sees the admin and
    is refused (403), nothing changed. The other ``admins:write`` changes read the row unheld
    (their locks come in ``UserAdmin._locking_admins``' order); a promotion takes no admin's row
    after it, so its lock orders nothing against theirs: no deadlock, every request answers."""
    create_user(storage_app, email="root@example.com", admin=True)
    member = create_user(storage_app, email="member@example.com")
    ci = Api(storage_app, issue(storage_app, "users:write", name="ci"))
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    method, tail, body, event = CHANGES[change]
    outcome: dict[str, Any] = {}

    with checkpoints.holding(ACTING_CHECKPOINT):
        promote = in_thread(
            outcome, "promote", lambda: ops.call("PATCH", f"/users/{member.id}", {"admin": True})
        )
        wait_until(lambda: checkpoints.arrivals(ACTING_CHECKPOINT) >= 1 or not promote.is_alive(),
                   "the promotion reached its checkpoint")  # fmt: skip
        assert promote.is_alive(), outcome
        changing = in_thread(
            outcome, "change", lambda: ci.call(method, f"/users/{member.id}{tail}", body)
        )
        # Held, the promotion's lock keeps the change from its check; unheld, the change would
        # check the member and reach the checkpoint too.
        wait_until(lambda: not changing.is_alive() or waits_for_a_lock(storage_app, changing)
                   or checkpoints.arrivals(ACTING_CHECKPOINT) >= 2,
                   "the change waits for the promotion's lock")  # fmt: skip
    for thread in (promote, changing):
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    assert "promote error" not in outcome, outcome
    assert "change error" not in outcome, outcome

    assert outcome["promote"].status_code == 200, outcome["promote"].text
    assert outcome["change"].status_code == 403, outcome["change"].text
    assert outcome["change"].get_json()["scope"] == "admins:write"
    events = rows(storage_app, AuditEvent, AuditEvent.subject_id == member.id,
                  AuditEvent.kind.in_((event, "admin.user_promoted")))  # fmt: skip
    assert [e.kind for e in events] == ["admin.user_promoted"]
    [user] = rows(storage_app, User, User.id == member.id)
    assert user.is_admin
    assert user.disabled_at is None
    assert user.name != "Renamed"


def test_two_admins_disabled_at_once_by_tokens_that_may_act_on_admins_are_both_disabled(
    storage_app: Flask, checkpoints: Checkpoints
) -> None:
    """A token with ``admins:write`` has no admin check to outrun and holds no user's row before
    the active admins' rows (``UserAdmin._locking_admins``): two such disables of two admins at
    once, each held where it would write, both succeed. Holding each target's row first took the
    locks in two orders, and PostgreSQL ended one request as a deadlock (a 500)."""
    create_user(storage_app, email="root@example.com", admin=True)
    first = create_user(storage_app, email="first@example.com", admin=True)
    second = create_user(storage_app, email="second@example.com", admin=True)
    ops = Api(storage_app, issue(storage_app, "admins:write", name="ops"))
    outcome: dict[str, Any] = {}

    with checkpoints.holding(ACTING_CHECKPOINT):
        one = in_thread(outcome, "one", lambda: ops.call("POST", f"/users/{first.id}/disable"))
        wait_until(lambda: checkpoints.arrivals(ACTING_CHECKPOINT) >= 1 or not one.is_alive(),
                   "the first disable reached its checkpoint")  # fmt: skip
        assert one.is_alive(), outcome
        two = in_thread(outcome, "two", lambda: ops.call("POST", f"/users/{second.id}/disable"))
        wait_until(lambda: checkpoints.arrivals(ACTING_CHECKPOINT) >= 2 or not two.is_alive()
                   or waits_for_a_lock(storage_app, two),
                   "the second disable reached its checkpoint or waits for a lock")  # fmt: skip
    for thread in (one, two):
        thread.join(WAIT_LIMIT)
        assert not thread.is_alive()
    assert "one error" not in outcome, outcome
    assert "two error" not in outcome, outcome
    assert outcome["one"].status_code == 200, outcome["one"].text
    assert outcome["two"].status_code == 200, outcome["two"].text
    disabled = rows(storage_app, User, User.id.in_([first.id, second.id]))
    assert all(user.disabled_at is not None for user in disabled)
