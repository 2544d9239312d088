"""Ending unspent login links (rescue links and invites): the one UPDATE that every way of ending
them sends. A module of its own, beside idp.services.login_links, because idp.services.users
ends a user's links too (a change of their address) and cannot import that module, which
imports the audit log, which reads users through idp.services.users."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from idp.models import LoginLink


def end_unspent_links(db: Session, *which: ColumnElement[bool], now: datetime) -> int:
    """Mark the unspent links (neither consumed nor revoked) that ``which`` picks revoked at
    ``now``, in one conditional UPDATE; how many it ended. The ``Session``'s loaded links are
    left as they are (no synchronisation): callers read the count, not the rows."""
    result: Any = db.execute(
        update(LoginLink)
        .where(*which, LoginLink.consumed_at.is_(None), LoginLink.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
