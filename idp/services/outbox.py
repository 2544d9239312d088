"""The outbox: deliveries queued with the transaction that decided them and made only after it
commits (the transactional outbox pattern). One queue, one claim and one retry schedule for every
channel: mail to users (idp.services.notifications) and back-channel logout tokens to relying
parties (idp.services.backchannel_logout).

- A row is added to ``outbox_messages`` in the caller's transaction, with ``next_attempt_at`` set
  when a channel will deliver it. A request that rolls back leaves no row and announces nothing.
- After the commit, a delivery run (``DeliveryRun``, ``deliver``) claims each new row (one
  conditional UPDATE, so two nodes never both deliver it), delivers it outside any transaction,
  and marks it sent. Rows of different recipients (relying parties) are delivered in parallel,
  a few at a time, and a node's run takes newer rows while conversations are in flight: one
  recipient that is slow holds up no other's, then or later. A row that could not be delivered
  stays queued with a backoff and its last failure; the prune job retries it: ``idp prune``
  (idp.services.retention) calls ``deliver_due``, the opportunistic prune after a response
  hands ``due_ids`` to the delivery threads (idp.web.background).
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
#: Ids read in one statement when the rows handed to a run are sorted into lanes (``_lanes``).
LANE_READ_BATCH = 500
#: Conversations one delivery run holds at once, each with another recipient: Back-Channel
#: Logout 1.0 2.5-2.8 has every relying party told, and one that hangs until its deadline
#: (idp.services.backchannel_logout) must not make the others wait behind it. Few, as each is a
#: thread of the node's, and the rows' database work stays on the run's own thread.
PARALLEL_DELIVERIES = 4


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

    def prepare(self, message: Pending) -> Callable[[], None]:
        """What delivering one row needs of the database, done now on the calling thread (the
        run's session); returns the conversation with the recipient, which uses no session and
        runs on another thread (``deliver``). Either raises ``DeliveryError`` on failure."""


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


def _claim(db: Session, message_id: int, now: datetime, channels: Sequence[str]) -> Pending | None:
    """Take one due row for this attempt, or None if it is not due, not for one of ``channels``,
    or another node took it: ``next_attempt_at`` moves to the retry time in the same conditional
    UPDATE, so a crash or a failure leaves it queued for the backoff, and a parallel claim finds
    it not due (a row is claimed once per attempt, whichever node tries)."""
    condition = and_(OutboxMessage.id == message_id, OutboxMessage.channel.in_(channels), _due(now))
    attempts = db.scalar(select(OutboxMessage.attempts).where(condition))
    if attempts is None:
        db.commit()
        return None
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


#: A lane: the channel, and the recipient its rows go to ("" for a channel with one server).
Lane = tuple[str, str]


def _lanes(
    db: Session, by_name: dict[str, Channel], message_ids: list[int]
) -> dict[Lane, list[int]]:
    """The rows by whom they go to, each lane in the order given: one lane for a channel whose
    recipients share one server (``stop_after_failure``: mail, through one relay), else one per
    recipient (a relying party). A lane's rows are delivered one after the other, the lanes in
    parallel (``DeliveryRun``)."""
    wanted = sorted(set(message_ids))
    found: dict[int, tuple[str, str]] = {}
    # A few hundred ids per statement: a backlog handed at once (the retries of a node that was
    # down, the lists that queued up behind a delivery) never makes one statement with an
    # enormous IN list, which PostgreSQL plans slowly and SQLite caps in bound parameters.
    for start in range(0, len(wanted), LANE_READ_BATCH):
        found.update(
            (row.id, (row.channel, row.recipient))
            for row in db.execute(
                select(OutboxMessage.id, OutboxMessage.channel, OutboxMessage.recipient).where(
                    OutboxMessage.id.in_(wanted[start : start + LANE_READ_BATCH]),
                    OutboxMessage.channel.in_(sorted(by_name)),
                )
            )
        )
        db.commit()
    lanes: dict[Lane, list[int]] = {}
    for message_id in message_ids:
        if message_id in found:
            channel, recipient = found[message_id]
            key = (channel, "" if by_name[channel].stop_after_failure else recipient)
            lanes.setdefault(key, []).append(message_id)
    return lanes


def deliver(
    db: Session,
    channels: Sequence[Channel],
    message_ids: list[int],
    now: datetime,
    *,
    stop_on_failure: bool = False,
) -> int:
    """Deliver the given rows if they are due, and wait until each was attempted; returns how
    many were delivered (``DeliveryRun``: a command's run, a test's). Never raises for a failed
    delivery: the row stays queued with its failure recorded."""
    with DeliveryRun(db, channels, stop_on_failure=stop_on_failure) as run:
        run.add(message_ids, now)
        while not run.idle:
            run.settle(block=True)
            run.start(now)
    return run.sent


class DeliveryRun:
    """Deliveries in progress on one thread and its session ``db``. Each row is claimed and
    prepared (``Channel.prepare``) on this thread, delivered with no transaction open (so no
    lock is held while the network talks), then marked sent with its secret dropped, or its
    failure recorded: only the conversations leave this thread, as a session must stay on one.

    Each recipient's rows go one after the other, different recipients' in parallel, up to
    ``PARALLEL_DELIVERIES`` at once (``_lanes``): a relying party that hangs until its deadline
    held every other one's logout token behind it (Back-Channel Logout 1.0 2.5-2.8). More rows
    may be added (``add``) while conversations are in flight, and go out at once unless their
    recipient is in one, where they wait for it to end: a node's delivery thread
    (idp.web.background.OutboxWorker) keeps one run while any conversation is in flight, so that
    a relying party that hangs holds up no later logout token of another relying party either.
    ``stop_on_failure``: after a failure, the rows that waited in that lane when it began are
    left for a later run (a relying party that is down, or a mail relay, would cost a timeout
    for each); those added while it was in flight get one attempt, as a new run's would.
    ``on_ended`` is called, from the conversation's thread, when one ends: ``settle`` then has
    an outcome to record."""

    def __init__(
        self,
        db: Session,
        channels: Sequence[Channel],
        *,
        stop_on_failure: bool = False,
        on_ended: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.by_name = {channel.name: channel for channel in channels}
        self.stop_on_failure = stop_on_failure
        self.on_ended = on_ended
        self.sent = 0
        self._waiting: dict[Lane, deque[int]] = {}
        #: Each conversation's lane, row, and how many rows waited behind it when it began.
        self._running: dict[Future[None], tuple[Lane, Pending, int]] = {}
        self._ended: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(PARALLEL_DELIVERIES, thread_name_prefix="idp-outbox-send")

    def __enter__(self) -> DeliveryRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True)

    @property
    def idle(self) -> bool:
        """Nothing in flight, and nothing waiting to start."""
        return not self._running and not self._waiting

    @property
    def in_flight(self) -> int:
        """Conversations started and not yet settled."""
        return len(self._running)

    def add(self, message_ids: list[int], now: datetime) -> None:
        """Queue ``message_ids`` behind their recipients' rows, and start what may start."""
        for lane, ids in _lanes(self.db, self.by_name, message_ids).items():
            self._waiting.setdefault(lane, deque()).extend(ids)
        self.start(now)

    def start(self, now: datetime) -> None:
        """Claim, prepare and hand to the pool the next due row of each lane with no
        conversation in flight, while fewer than ``PARALLEL_DELIVERIES`` are."""
        busy = {lane for lane, _message, _behind in self._running.values()}
        for lane in list(self._waiting):
            if len(self._running) >= PARALLEL_DELIVERIES:
                return
            if lane in busy:
                continue
            ids = self._waiting.pop(lane)
            started = self._start_next(ids, now)
            if started is not None:
                self._running[started[0]] = (lane, started[1], len(ids))
                started[0].add_done_callback(self._conversation_ended)
            if ids:
                self._waiting[lane] = ids  # behind the other lanes: they take turns

    def settle(self, *, block: bool) -> None:
        """Record the outcome of each conversation that ended, on this thread; with ``block``,
        first wait for one to end if any is in flight."""
        ended: list[Future[None]] = []
        if block and self._running:
            ended.append(self._ended.get())
        with contextlib.suppress(queue.Empty):
            while True:
                ended.append(self._ended.get_nowait())
        for future in ended:
            lane, message, behind = self._running.pop(future)
            error = future.exception()
            if error is None:
                _sent(self.db, message)
                self.sent += 1
            else:
                _failed(self.db, message, _as_delivery_error(message, error))
                waiting = self._waiting.get(lane)
                if self.stop_on_failure and waiting:
                    for _ in range(min(behind, len(waiting))):
                        waiting.popleft()
                    if not waiting:
                        del self._waiting[lane]

    def _conversation_ended(self, future: Future[None]) -> None:
        self._ended.put(future)
        if self.on_ended is not None:
            self.on_ended()

    def _start_next(self, lane: deque[int], now: datetime) -> tuple[Future[None], Pending] | None:
        """Claim and prepare the lane's next due row and hand its conversation to the pool;
        None when the lane has none left to start."""
        while lane:
            message = _claim(self.db, lane.popleft(), now, sorted(self.by_name))
            if message is None:
                continue
            try:
                conversation = self.by_name[message.channel].prepare(message)
            except Exception as error:  # one message's fault must not stop the others
                _failed(self.db, message, _as_delivery_error(message, error))
                if self.stop_on_failure:
                    lane.clear()
                continue
            return self._pool.submit(conversation), message
        return None


def _as_delivery_error(message: Pending, error: BaseException) -> DeliveryError:
    if isinstance(error, DeliveryError):
        return error
    # A fault of idp's own (a key, a bug), not the recipient's: kept for a retry and logged
    # whole, while the other messages go on.
    log.error("delivering outbox %s raised", message.id, exc_info=error)
    return DeliveryError(f"internal error: {type(error).__name__}")


def _sent(db: Session, message: Pending) -> None:
    db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id)
        .values(
            sent_at=utcnow(),
            next_attempt_at=None,
            body=func.coalesce(OutboxMessage.redacted_body, OutboxMessage.body),
            redacted_body=None,
        )
    )
    db.commit()
    metrics.outbox_delivery(message.channel, "sent")


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
