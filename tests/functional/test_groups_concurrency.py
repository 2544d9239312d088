"""Concurrent changes of groups on PostgreSQL, held in flight: the first transaction has written
(not committed); the second is seen waiting on its lock; then the first commits. Of two adds (or
removes) of one membership exactly one changes it and is audited; the other reports no change
instead of failing. Of two changes of access at once (two memberships removed, a group deleted,
a client's allowed groups changed), the second sees the first, so a user left in no allowed group
loses the grant. (SQLite runs one writer at a time: nothing to interleave.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from idp.extensions import db
from idp.models import AuditEvent, Client, Grant, GroupMember
from idp.models.base import utcnow
from idp.services.groups import GroupService
from tests.conftest import _empty_tables
from tests.support.factories import create_client, create_user, rows

WAIT_LIMIT = 60.0  # seconds before a stuck test fails instead of hanging; never a timing claim


@pytest.fixture
def pg_app(_postgres_app: Flask) -> Iterator[Flask]:
    yield _postgres_app
    _empty_tables(_postgres_app)


def _backend_pid(session: Session) -> int:
    raw: Any = session.connection().connection.dbapi_connection
    return int(raw.info.backend_pid)


def _wait_until_blocked(engine: Engine, pid: int, worker: threading.Thread) -> None:
    """Until PostgreSQL reports the second transaction waiting on a lock (pg_stat_activity)."""
    deadline = time.monotonic() + WAIT_LIMIT
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    while True:
        with engine.connect() as connection:
            if connection.scalar(query, {"pid": pid}) == "Lock":
                return
        assert worker.is_alive(), "the second transaction finished without waiting"
        assert time.monotonic() < deadline, "the second transaction never waited on the lock"
        time.sleep(0.01)


def _interleave(
    app: Flask, email: str, act: Callable[[GroupService, Any, list[Any]], list[Any]]
) -> tuple[list[Any], list[Any]]:
    """``act`` in a first transaction left open, then in a second one held on its lock, then the
    first commits: (what the first changed, what the second changed)."""
    with app.app_context():
        engine = db.engine
    first, second = Session(engine), Session(engine)
    outcome: dict[str, Any] = {}
    try:
        service = GroupService(first)
        done_first = act(service, service.require("staff"), service.find_users([email]))
        first.flush()
        pid = _backend_pid(second)

        def run_second() -> None:
            try:
                other = GroupService(second)
                outcome["changed"] = act(other, other.require("staff"), other.find_users([email]))
                second.commit()
            except Exception as error:  # reported in the test's thread
                outcome["error"] = error

        worker = threading.Thread(target=run_second)
        worker.start()
        _wait_until_blocked(engine, pid, worker)
        first.commit()
        worker.join(WAIT_LIMIT)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
        return [u.email for u in done_first], [u.email for u in outcome["changed"]]
    finally:
        first.close()
        second.close()


def _group(app: Flask, *emails: str) -> None:
    with app.app_context():
        service = GroupService(db.session())
        group = service.create("staff")
        if emails:
            service.add_members(group, service.find_users(list(emails)))
        db.session.commit()


def test_concurrent_adds_of_one_membership_add_it_once(pg_app: Flask) -> None:
    user = create_user(pg_app, email="ada@example.com")
    _group(pg_app)
    first, second = _interleave(pg_app, user.email, lambda s, g, u: s.add_members(g, u))
    assert (first, second) == ([user.email], [])
    assert len(rows(pg_app, GroupMember)) == 1
    assert len(rows(pg_app, AuditEvent, AuditEvent.kind == "group.member_added")) == 1


def test_concurrent_removes_of_one_membership_remove_it_once(pg_app: Flask) -> None:
    user = create_user(pg_app, email="ada@example.com")
    _group(pg_app, user.email)
    first, second = _interleave(pg_app, user.email, lambda s, g, u: s.remove_members(g, u))
    assert (first, second) == ([user.email], [])
    assert rows(pg_app, GroupMember) == []
    assert len(rows(pg_app, AuditEvent, AuditEvent.kind == "group.member_removed")) == 1


# -- access follows membership, whatever changes at once ----------------------------------------
def _access_setup(app: Flask) -> tuple[str, str]:
    """A user in ``staff`` and ``admins``, a client allowed both, and a live grant of the user's
    to it: (the user's email, the grant's id)."""
    user = create_user(app, email="ada@example.com")
    registered = create_client(app)
    with app.app_context():
        service = GroupService(db.session())
        for name in ("staff", "admins"):
            service.add_members(service.create(name), service.find_users([user.email]))
        client = db.session.get_one(Client, registered.client_id)
        service.set_allowed_groups(client, ["staff", "admins"])
        grant = Grant(user_id=user.id, client_id=registered.client_id, scope="openid",
                      auth_time=utcnow(), amr=["hwk"], acr="phr")  # fmt: skip
        db.session.add(grant)
        db.session.commit()
        return user.email, grant.id


def _one_after_the_other(
    app: Flask, first: Callable[[GroupService], Any], second: Callable[[GroupService], Any]
) -> None:
    """``first`` in a transaction left open (written, not committed), then ``second`` in another,
    which must wait for the first (held on its lock, seen by PostgreSQL), then the first commits
    and the second finishes."""
    with app.app_context():
        engine = db.engine
    one, two = Session(engine), Session(engine)
    outcome: dict[str, Any] = {}
    try:
        first(GroupService(one))
        one.flush()
        pid = _backend_pid(two)

        def run_second() -> None:
            try:
                second(GroupService(two))
                two.commit()
            except Exception as error:  # reported in the test's thread
                outcome["error"] = error

        worker = threading.Thread(target=run_second)
        worker.start()
        _blocked_or_done(engine, pid, worker)
        one.commit()
        worker.join(WAIT_LIMIT)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
    finally:
        one.close()
        two.close()


def _blocked_or_done(engine: Engine, pid: int, worker: threading.Thread) -> None:
    """Until the second transaction waits on a lock, or has finished without one (what the
    test's assertions then find is the rule broken, not a hang)."""
    deadline = time.monotonic() + WAIT_LIMIT
    query = text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid")
    while worker.is_alive():
        with engine.connect() as connection:
            if connection.scalar(query, {"pid": pid}) == "Lock":
                return
        assert time.monotonic() < deadline, "the second transaction neither waited nor ended"
        time.sleep(0.01)


def _remove(email: str, group: str) -> Callable[[GroupService], Any]:
    return lambda s: s.remove_members(s.require(group), s.find_users([email]))


def _revoked(app: Flask, grant_id: str) -> bool:
    with app.app_context():
        return db.session.get_one(Grant, grant_id).revoked_at is not None


def test_leaving_both_allowed_groups_at_once_revokes_the_grant(pg_app: Flask) -> None:
    """docs/admins.md, "Access follows membership": two admins each take the user out of one of
    the client's two allowed groups at once. Each removal's revocation asked whether the user was
    still in an allowed group while the other's removal was not yet committed, so each found the
    other group, neither revoked, and the user, in no allowed group, kept a live grant (its access
    tokens answered at userinfo and introspection). Changes of access are made one after the
    other, so the second sees the first and revokes."""
    email, grant_id = _access_setup(pg_app)
    _one_after_the_other(pg_app, _remove(email, "staff"), _remove(email, "admins"))
    assert rows(pg_app, GroupMember) == []
    assert _revoked(pg_app, grant_id)


def test_a_group_deleted_while_the_user_leaves_the_other_revokes_the_grant(
    pg_app: Flask,
) -> None:
    """The same with one allowed group deleted while the user is taken out of the other."""
    email, grant_id = _access_setup(pg_app)
    delete = lambda s: s.delete(s.require("staff"), confirmed=True)  # noqa: E731
    _one_after_the_other(pg_app, delete, _remove(email, "admins"))
    assert _revoked(pg_app, grant_id)


def test_a_clients_groups_changed_while_the_user_leaves_the_one_kept_revokes_the_grant(
    pg_app: Flask,
) -> None:
    """The same with the client's allowed groups narrowed to ``admins`` while the user is taken
    out of ``admins``: each change found the user allowed by what the other was removing."""
    email, grant_id = _access_setup(pg_app)
    client_id = rows(pg_app, Grant)[0].client_id

    def narrow(service: GroupService) -> None:
        service.set_allowed_groups(service.db.get_one(Client, client_id), ["admins"])

    _one_after_the_other(pg_app, narrow, _remove(email, "admins"))
    assert _revoked(pg_app, grant_id)
