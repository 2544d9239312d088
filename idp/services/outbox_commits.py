"""The outbox rows a transaction wrote, known once it commits (idp.services.outbox): session
events note the rows each flush adds and forget them at a rollback, so that after the commit the
delivery threads are handed exactly the rows that now exist (the transactional outbox pattern)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from idp.models import OutboxMessage

_FLUSHED = "idp.outbox.flushed"
_COMMITTED = "idp.outbox.committed"


@event.listens_for(Session, "after_flush")
def _remember_queued(session: Session, _flush_context: Any) -> None:
    """Note the rows written in this transaction (``session.new`` still holds them during
    ``after_flush``): ``deliver`` claims those that are due, and a development server without
    SMTP prints its mail (idp.web.background.print_committed)."""
    rows = [
        (obj.channel or "mail", obj.id) for obj in session.new if isinstance(obj, OutboxMessage)
    ]
    if rows:
        session.info.setdefault(_FLUSHED, []).extend(rows)


@event.listens_for(Session, "after_commit")
def _queue_committed(session: Session) -> None:
    flushed = session.info.pop(_FLUSHED, None)
    if flushed:
        session.info.setdefault(_COMMITTED, []).extend(flushed)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    # The transaction's rows are gone with it: nothing to deliver.
    session.info.pop(_FLUSHED, None)


def take_committed(session: Session) -> dict[str, list[int]]:
    """The ids of rows committed through ``session`` and not yet handed to ``deliver``, by
    channel."""
    by_channel: dict[str, list[int]] = {}
    for channel, row_id in session.info.pop(_COMMITTED, []):
        by_channel.setdefault(channel, []).append(row_id)
    return by_channel
