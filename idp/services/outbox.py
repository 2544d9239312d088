"""The outbox: deliveries queued with the transaction that decided them and made only after it
commits (the transactional outbox pattern). One queue, one claim and one retry schedule for every
channel: mail to users (idp.services.notifications) and back-channel logout tokens to relying
parties (idp.services.backchannel_logout).

- A row is added to ``outbox_messages`` in the caller's transaction, with ``next_attempt_at`` set
  when a channel will deliver it. A request that rolls back leaves no row and announces nothing.
- After the commit, ``deliver`` claims each new row (one conditional UPDATE, so two nodes never
  both deliver it), delivers it outside any transaction, and marks it sent. A row that could not
  be delivered stays queued with a backoff and its last failure; the prune job retries it:
  ``idp prune`` (idp.services.retention) calls ``deliver_due``, the opportunistic prune after a
  response hands ``due_ids`` to the delivery threads (idp.web.background).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, event, func, or_, select, update
from sqlalchemy.orm import Session

from idp import metrics
from idp.models import OutboxMessage
from idp.models.base import utcnow

log = logging.getLogger(__name__)

#: Retries after a failed delivery: 1, 2, 4, ... minutes, at most an hour apart, then given up
#: (the row stays in the outbox, undelivered, and the log says so). The prune job runs the
#: retries, so they are also at most as frequent as ``prune_interval``.
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 12
#: Due rows one prune run delivers at most, per channel.
DELIVERY_BATCH = 100
MAX_ERROR_LENGTH = 200


@dataclass(frozen=True)
class Pending:
    """A claimed row, as read before the delivery (no ORM object crosses the network call)."""

    id: int
    channel: str
    kind: str
    user_id: str | None
    recipient: str
    subject: str
    body: str
    details: dict[str, Any]


class DeliveryError(Exception):
    """The delivery did not happen; the message (short, secret-free) is kept as ``last_error``
    and the row stays queued for a retry."""


class UndeliverableError(DeliveryError):
    """The delivery can never happen (its recipient is gone): no retry."""


class Channel(Protocol):
    @property
    def name(self) -> str:
        """``OutboxMessage.channel`` of the rows this channel delivers."""

    @property
    def stop_after_failure(self) -> bool:
        """A prune run stops this channel at its first failure (a dead SMTP server would
        otherwise cost a timeout per message); False where each row has its own recipient."""

    def send(self, message: Pending) -> None:
        """Deliver one row, or raise ``DeliveryError``."""


# -- after the commit ------------------------------------------------------------------------------
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


# -- delivery ----------------------------------------------------------------------------------
def retry_after(attempts: int) -> timedelta:
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_RETRY)


def _due(now: datetime) -> Any:
    return and_(
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.secret_expires_at.is_(None), OutboxMessage.secret_expires_at > now),
    )


def _claim(
    db: Session,
    message_id: int,
    now: datetime,
    channels: Sequence[str],
    failing: Collection[tuple[str, str]] = (),
) -> Pending | None:
    """Take one due row for this attempt, or None if it is not due, not for one of ``channels``,
    for a (channel, recipient) of ``failing``, or another node took it: ``next_attempt_at``
    moves to the retry time in the same conditional UPDATE, so a crash or a failure leaves it
    queued for the backoff, and a parallel claim finds it not due (a row is claimed once per
    attempt, whichever node tries). A row left for ``failing`` is not claimed: it stays due."""
    condition = and_(OutboxMessage.id == message_id, OutboxMessage.channel.in_(channels), _due(now))
    found = db.execute(
        select(OutboxMessage.attempts, OutboxMessage.channel, OutboxMessage.recipient).where(
            condition
        )
    ).first()
    if found is None or (found.channel, found.recipient) in failing:
        db.commit()
        return None
    attempts = found.attempts
    tries = attempts + 1
    claimed = db.execute(
        update(OutboxMessage)
        .where(condition, OutboxMessage.attempts == attempts)
        .values(
            attempts=tries,
            next_attempt_at=now + retry_after(tries) if tries < MAX_ATTEMPTS else None,
        )
    )
    db.commit()
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    row = db.get(OutboxMessage, message_id)
    if row is None:
        return None
    pending = Pending(
        id=row.id, channel=row.channel, kind=row.kind, user_id=row.user_id,
        recipient=row.recipient, subject=row.subject, body=row.body, details=dict(row.details),
    )  # fmt: skip
    db.commit()  # end the read transaction before talking to anyone
    return pending


def deliver(
    db: Session,
    channels: Sequence[Channel],
    message_ids: list[int],
    now: datetime,
    *,
    stop_on_failure: bool = False,
) -> int:
    """Deliver the given rows if they are due; returns how many were delivered. Each is claimed,
    delivered with no transaction open (so no lock is held while the network talks), then marked
    sent with its secret dropped. Never raises for a failed delivery: the row stays queued with
    its failure recorded. ``stop_on_failure``: after one failure of a channel whose
    ``stop_after_failure`` is set, leave its other rows for the next run; after one failure of
    a recipient of another channel (a relying party that is down or hangs), leave that
    recipient's other rows for the next run: they would cost a timeout each, and every other
    recipient's rows waited behind them on the channel's one delivery thread."""
    by_name = {channel.name: channel for channel in channels}
    stopped: set[str] = set()
    failing: set[tuple[str, str]] = set()
    sent = 0
    for message_id in message_ids:
        live = [n for n in by_name if n not in stopped]
        message = _claim(db, message_id, now, live, failing)
        if message is None:
            continue
        channel = by_name[message.channel]
        try:
            channel.send(message)
        except Exception as error:  # one message's fault must not stop the others
            if not isinstance(error, DeliveryError):
                # A fault of idp's own (a key, a bug), not the recipient's: kept for a retry and
                # logged whole, while the other messages go on.
                log.exception("delivering outbox %s raised", message.id)
                error = DeliveryError(f"internal error: {type(error).__name__}")
            _failed(db, message, error)
            if stop_on_failure and channel.stop_after_failure:
                stopped.add(channel.name)
            elif stop_on_failure:
                failing.add((channel.name, message.recipient))
            continue
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(
                sent_at=utcnow(),
                next_attempt_at=None,
                body=func.coalesce(OutboxMessage.redacted_body, OutboxMessage.body),
                redacted_body=None,
            )
        )
        db.commit()
        metrics.outbox_delivery(message.channel, "sent")
        sent += 1
    return sent


def _failed(db: Session, message: Pending, error: DeliveryError) -> None:
    db.rollback()
    reason = (str(error) or type(error).__name__)[:MAX_ERROR_LENGTH]
    values: dict[str, Any] = {"last_failure_at": utcnow(), "last_error": reason}
    if isinstance(error, UndeliverableError):
        values["next_attempt_at"] = None
    db.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(**values))
    db.commit()
    metrics.outbox_delivery(message.channel, "failed")
    log.warning(
        "delivering %s %s (outbox %s) failed, %s: %s",
        message.channel, message.kind, message.id,
        "given up" if isinstance(error, UndeliverableError) else "kept for a retry", reason,
    )  # fmt: skip


def deliver_due(
    db: Session, channels: Sequence[Channel], now: datetime, limit: int = DELIVERY_BATCH
) -> int:
    """``idp prune``'s retry: deliver up to ``limit`` rows per channel whose next attempt is
    due, here (a command's own thread)."""
    sent = 0
    for channel in channels:
        ids = due_ids(db, channel.name, now, limit)
        db.commit()
        sent += deliver(db, [channel], ids, now, stop_on_failure=True)
    return sent


def due_ids(db: Session, channel: str, now: datetime, limit: int = DELIVERY_BATCH) -> list[int]:
    """Up to ``limit`` rows of ``channel`` whose next attempt is due, the longest due first: the
    retries the opportunistic prune hands to the delivery threads (idp.web.background)."""
    return list(
        db.scalars(
            select(OutboxMessage.id)
            .where(_due(now), OutboxMessage.channel == channel)
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    )
