"""Concurrent adds and removes of one membership on PostgreSQL, held in flight: the first
transaction has written (not committed); the second is seen waiting on its row lock; then the
first commits. Exactly one of them adds (or removes) the membership and is audited; the other
reports no change instead of failing. (SQLite runs one writer at a time: nothing to interleave.)"""

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
from idp.models import AuditEvent, GroupMember
from idp.services.groups import GroupService
from tests.conftest import _empty_tables
from tests.support.factories import create_user, rows

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
