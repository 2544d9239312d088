"""Group changes made without an explicit time take their service's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from idp.clock import FrozenClock
from idp.models import Base, GroupMember, User
from idp.services.groups import GroupService


def test_a_group_and_its_members_are_stamped_by_the_service_clock() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    clock = FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    with Session(engine) as db:
        groups = GroupService(db, clock=clock)
        group = groups.create("team")
        assert group.created_at == clock.now()
        ada = User(email="ada@example.com", name="Ada")
        db.add(ada)
        db.flush()
        clock.advance(timedelta(hours=1))
        assert groups.add_members(group, [ada]) == [ada]
        member = db.scalars(select(GroupMember)).one()
        assert member.added_at == clock.now()
    engine.dispose()
