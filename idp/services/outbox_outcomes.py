"""What becomes of a claimed outbox row (idp.services.outbox): the row as a delivery run reads it
(``Pending``), the failures a channel raises, and the ledger that writes each finished
delivery's outcome to its row as the delivery ends (``Outcomes``).

A delivery that was made and not written as sent is made again at the row's retry: the run
keeps each outcome it could not write because the database failed for a moment, and writes it
again on its next tick, in the row's claim window (``RECORD_WINDOW`` ends well before
``idp.services.outbox.FIRST_RETRY``, when another node could claim the row again). Only if the
database stays down past that is an outcome given up, and never silently: the log says which
rows will be delivered again, and ``idp_outbox_deliveries_total`` counts them as
``unrecorded``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc, func, update
from sqlalchemy.orm import Session

from idp import metrics
from idp.models import OutboxMessage
from idp.models.base import utcnow

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 200
#: Seconds a run waits before it tries again what the database refused for a moment: an
#: outcome to write, rows to sort into lanes, a row to claim.
RETRY_TICK = 1.0
#: Seconds an outcome is tried again after its first failed write before it is given up
#: (logged): half the first retry's backoff, so that it is written before the row could be
#: claimed again.
RECORD_WINDOW = 30.0


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


def transient(error: BaseException) -> bool:
    """A database error the next tick may not meet: the server or its connection failed
    (``OperationalError``: a lost connection, a lock or statement timeout, a serialization
    failure), not a statement that is wrong."""
    if isinstance(error, exc.OperationalError):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


def as_delivery_error(message: Pending, error: BaseException) -> DeliveryError:
    if isinstance(error, DeliveryError):
        return error
    # A fault of idp's own (a key, a bug), not the recipient's: kept for a retry and logged
    # whole, while the other messages go on.
    log.error("delivering outbox %s raised", message.id, exc_info=error)
    return DeliveryError(f"internal error: {type(error).__name__}")


class Outcomes:
    """The outcomes of a run's finished deliveries not yet written to their rows, in the order
    they ended. ``write`` writes them, each in a transaction of its own; a transient database
    error leaves it and those after it for the next call (the run's next tick), so that a
    delivery that was made is written as sent before its row could be claimed again."""

    def __init__(self, db: Session) -> None:
        self.db = db
        #: Each outcome: the row, and its failure (None: sent).
        self._unwritten: deque[tuple[Pending, DeliveryError | None]] = deque()
        #: When the writes began to fail, if they do: one window for all, so that a database
        #: that stays down costs the run ``RECORD_WINDOW`` once, not once per outcome.
        self._failing_since: float | None = None

    def __bool__(self) -> bool:
        return bool(self._unwritten)

    def sent_ids(self) -> set[int]:
        """Rows delivered whose outcome is not written yet: a run never claims them again."""
        return {message.id for message, error in self._unwritten if error is None}

    def add(self, message: Pending, error: DeliveryError | None) -> None:
        self._unwritten.append((message, error))

    def write(self) -> int:
        """Write what may be written now; returns how many rows were written as sent. Raises
        only what is no transient database error."""
        sent = 0
        while self._unwritten:
            message, error = self._unwritten[0]
            try:
                if error is None:
                    _sent(self.db, message)
                else:
                    _failed(self.db, message, error)
            except Exception as fault:
                self.db.rollback()
                if not transient(fault):
                    raise
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                if time.monotonic() - self._failing_since < RECORD_WINDOW:
                    log.warning("recording outbox %s failed, tried again: %s", message.id, fault)
                    return sent
                self._unwritten.popleft()
                _given_up(message, error, fault)
                continue
            self._failing_since = None
            self._unwritten.popleft()
            sent += error is None
        return sent

    def abandon(self) -> None:
        """The run ends with outcomes unwritten (the database stayed down, or the run failed
        otherwise): say which, never drop them silently."""
        while self._unwritten:
            message, error = self._unwritten.popleft()
            _given_up(message, error, None)


def _given_up(message: Pending, error: DeliveryError | None, fault: BaseException | None) -> None:
    if error is None:
        metrics.outbox_delivery(message.channel, "unrecorded")
        log.error(
            "%s %s (outbox %s) was delivered but could not be recorded as sent; it will be "
            "delivered again at its retry: %s",
            message.channel, message.kind, message.id, fault,
        )  # fmt: skip
    else:
        # The row stays claimed until its backoff ends, then is retried as a failure would be.
        log.error("the failure of outbox %s could not be recorded: %s", message.id, fault)


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
