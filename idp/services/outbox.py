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
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from idp.models import OutboxMessage
from idp.services import outbox_outcomes
from idp.services.outbox_commits import take_committed as take_committed
from idp.services.outbox_outcomes import DeliveryError as DeliveryError
from idp.services.outbox_outcomes import Outcomes, as_delivery_error, transient
from idp.services.outbox_outcomes import Pending as Pending
from idp.services.outbox_outcomes import UndeliverableError as UndeliverableError

log = logging.getLogger(__name__)

#: Retries after a failed delivery: 1, 2, 4, ... minutes, at most an hour apart, then given up
#: (the row stays in the outbox, undelivered, and the log says so). The prune job runs the
#: retries, so they are also at most as frequent as ``prune_interval``.
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 12
#: Due rows one prune run delivers at most, per channel.
DELIVERY_BATCH = 100
#: Ids read in one statement when the rows handed to a run are sorted into lanes (``_lanes``).
LANE_READ_BATCH = 500
#: Conversations one delivery run holds at once, each with another recipient: Back-Channel
#: Logout 1.0 2.5-2.8 has every relying party told, and one that hangs until its deadline
#: (idp.services.backchannel_logout) must not make the others wait behind it. Few, as each is a
#: thread of the node's, and the rows' database work stays on the run's own thread.
PARALLEL_DELIVERIES = 4


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
    """Deliver the given rows if they are due, and wait until each was attempted and its
    outcome written; returns how many were delivered (``DeliveryRun``: a command's run, a
    test's). Never raises for a failed delivery: the row stays queued with its failure
    recorded."""
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
    an outcome to record.

    A transient database error (``outbox_outcomes.transient``) abandons nothing: each outcome is
    written as its conversation ends, and one the database refused is kept and written again on
    the run's next tick (``outbox_outcomes.Outcomes``), as are rows it could not sort into lanes
    or claim; meanwhile the conversations in flight go on. A row delivered is never claimed
    again by its run while its outcome waits to be written. ``retrying`` says the run has such
    work: its caller comes back within ``wait_limit`` even when no conversation ends."""

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
        self._outcomes = Outcomes(db)
        #: Rows added whose lanes could not be read yet (the database failed).
        self._unsorted: list[int] = []
        #: A claim failed for a transient database error: tried again on the next tick.
        self._stalled = False
        #: When the run's own statements (a lane read, a claim) began to fail, if they do.
        self._refused_since: float | None = None
        self._waiting: dict[Lane, deque[int]] = {}
        #: Each conversation's lane, row, and how many rows waited behind it when it began.
        self._running: dict[Future[None], tuple[Lane, Pending, int]] = {}
        self._ended: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(PARALLEL_DELIVERIES, thread_name_prefix="idp-outbox-send")

    def __enter__(self) -> DeliveryRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._pool.shutdown(wait=True)
        # A run left early (an error of another kind) still writes what its conversations did:
        # a delivery made and not written as sent would be made again at the row's retry.
        try:
            self.settle(block=False)
            self.sent += self._outcomes.write()
        except Exception:
            self.db.rollback()
            log.exception("recording the outbox's outcomes failed")
        finally:
            self._outcomes.abandon()

    @property
    def idle(self) -> bool:
        """Nothing in flight, nothing waiting to start, nothing to try again."""
        return not self._running and not self._waiting and not self.retrying

    @property
    def retrying(self) -> bool:
        """Work the database refused for a moment waits for the next tick."""
        return bool(self._outcomes) or bool(self._unsorted) or self._stalled

    @property
    def wait_limit(self) -> float | None:
        """How long the caller may wait for a conversation to end before it calls ``start``
        again: the tick while the run is ``retrying``, else as long as it takes."""
        return outbox_outcomes.RETRY_TICK if self.retrying else None

    @property
    def in_flight(self) -> int:
        """Conversations started and not yet settled."""
        return len(self._running)

    def add(self, message_ids: list[int], now: datetime) -> None:
        """Queue ``message_ids`` behind their recipients' rows, and start what may start."""
        self._unsorted.extend(message_ids)
        self.start(now)

    def start(self, now: datetime) -> None:
        """Write the outcomes settled, sort the rows added into lanes, then claim, prepare and
        hand to the pool the next due row of each lane with no conversation in flight, while
        fewer than ``PARALLEL_DELIVERIES`` are; stops at a transient database error, for the
        next tick."""
        if not self._catch_up():
            return
        busy = {lane for lane, _message, _behind in self._running.values()}
        for lane in list(self._waiting):
            if len(self._running) >= PARALLEL_DELIVERIES or self._stalled:
                break
            if lane in busy:
                continue
            ids = self._waiting.pop(lane, None)
            if ids is None:
                continue  # left for the retry (``_refused``)
            started = self._start_next(ids, now)
            if started is not None:
                self._running[started[0]] = (lane, started[1], len(ids))
                started[0].add_done_callback(self._conversation_ended)
            if ids:
                self._waiting[lane] = ids  # behind the other lanes: they take turns
        self.sent += self._outcomes.write()  # the failures of ``prepare``

    def settle(self, *, block: bool) -> None:
        """Take the outcome of each conversation that ended, on this thread, for ``start`` to
        write; with ``block``, first wait for one to end if any is in flight (at most
        ``wait_limit``)."""
        ended: list[Future[None]] = []
        if block and (self._running or self.retrying):
            with contextlib.suppress(queue.Empty):
                ended.append(self._ended.get(timeout=self.wait_limit))
        with contextlib.suppress(queue.Empty):
            while True:
                ended.append(self._ended.get_nowait())
        for future in ended:
            lane, message, behind = self._running.pop(future)
            error = future.exception()
            if error is None:
                self._outcomes.add(message, None)
                continue
            self._outcomes.add(message, as_delivery_error(message, error))
            waiting = self._waiting.get(lane)
            if self.stop_on_failure and waiting:
                for _ in range(min(behind, len(waiting))):
                    waiting.popleft()
                if not waiting:
                    del self._waiting[lane]

    def _catch_up(self) -> bool:
        """Write the outcomes waiting and sort the rows added into lanes; False when the
        database refused either for now."""
        self._stalled = False
        self.sent += self._outcomes.write()
        if self._outcomes:
            return False  # the database is failing: claim nothing more until it is back
        if self._unsorted:
            try:
                lanes = _lanes(self.db, self.by_name, self._unsorted)
            except Exception as error:
                self._refused(error, f"reading {len(self._unsorted)} outbox rows")
                return False
            self._refused_since = None
            self._unsorted = []
            for lane, ids in lanes.items():
                self._waiting.setdefault(lane, deque()).extend(ids)
        return True

    def _refused(self, error: Exception, what: str) -> bool:
        """One of the run's own statements met ``error``: True to try it again on the next tick
        (``_stalled``), while a transient error lasts less than ``RECORD_WINDOW``; past it the
        rows not yet claimed leave the run (False) and stay due, unclaimed, for the prune job's
        retry, so that a database that stays down holds no thread for ever."""
        self.db.rollback()
        if not transient(error):
            raise error
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        if now - self._refused_since < outbox_outcomes.RECORD_WINDOW:
            log.warning("%s failed, tried again: %s", what, error)
            self._stalled = True
            return True
        log.error("%s failed, the database refusing for %d s: the rows not yet claimed are "
                  "left for the retry: %s", what, now - self._refused_since, error)  # fmt: skip
        self._refused_since = None
        self._unsorted = []
        self._waiting.clear()
        return False

    def _conversation_ended(self, future: Future[None]) -> None:
        self._ended.put(future)
        if self.on_ended is not None:
            self.on_ended()

    def _start_next(self, lane: deque[int], now: datetime) -> tuple[Future[None], Pending] | None:
        """Claim and prepare the lane's next due row and hand its conversation to the pool;
        None when the lane has none left to start, or a claim met a transient database error
        (the row stays first in its lane, ``_stalled``)."""
        while lane:
            if lane[0] in self._outcomes.sent_ids():
                lane.popleft()  # delivered, its outcome not written yet: never sent twice
                continue
            try:
                message = _claim(self.db, lane[0], now, sorted(self.by_name))
            except Exception as error:
                # If the claim was written before the error, the row is not due when it is
                # claimed again: it waits for its retry, sent once.
                if not self._refused(error, f"claiming outbox {lane[0]}"):
                    lane.clear()
                return None
            self._refused_since = None
            lane.popleft()
            if message is None:
                continue
            try:
                conversation = self.by_name[message.channel].prepare(message)
            except Exception as error:  # one message's fault must not stop the others
                self._outcomes.add(message, as_delivery_error(message, error))
                if self.stop_on_failure:
                    lane.clear()
                continue
            return self._pool.submit(conversation), message
        return None


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
