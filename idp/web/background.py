"""Work after the response: delivering what a request committed to the outbox (mail, back-channel
logout tokens) and opportunistic pruning (idp.services.retention), off every request."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, TypeVar

from flask import Flask, current_app

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import OutboxMessage
from idp.services.notifications import Mailer, describe_message, terminal_text
from idp.services.outbox import DeliveryRun, deliver, due_ids, take_committed
from idp.services.retention import (
    OPPORTUNISTIC_BATCHES,
    claim_run,
    prune,
)


class ClosingAnswer(Protocol):
    """What work after an answer registers on: a Werkzeug response, or the token side's direct
    answers (idp.web.direct)."""

    def call_on_close(self, func: Callable[[], Any]) -> Callable[[], Any]: ...


Answered = TypeVar("Answered", bound=ClosingAnswer)


def schedule_outbox(response: Answered) -> Answered:
    """Deliver what this request committed to the outbox once the response is sent, on the
    node's delivery threads (``OutboxWorker``, one per channel), never on the request's: a mail
    relay or a relying party that hangs holds no request worker (docs/operations.md, "Mail"),
    and one channel's stall delays no other's deliveries (idp.services.outbox)."""
    committed = _committed_to_outbox()
    if not committed:  # most requests: nothing to deliver
        return response
    mail_ids = committed.get(Mailer.name, [])
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if mail_ids and services().mailer is None:
        del committed[Mailer.name]
        if runtime().settings.prints_mail:
            # Development without SMTP: the terminal is where the mail goes (docs/operations.md).
            response.call_on_close(lambda: print_committed(app, mail_ids))
    for channel, ids in committed.items():
        outbox_worker(app, channel).submit(ids)
    return response


def _committed_to_outbox() -> dict[str, list[int]]:
    """What this context's session committed to the outbox; nothing, without opening a session,
    when the request never used the database (discovery, JWKS, static files)."""
    if not db.session.registry.has():
        return {}
    return take_committed(db.session())


def print_committed(app: Flask, ids: list[int]) -> None:
    """Development without SMTP: print the messages ``ids`` (links included) on the server's
    terminal, where the developer who runs it reads them; never raises."""
    with app.app_context():
        try:
            rows = [db.session.get(OutboxMessage, message_id) for message_id in ids]
            text = "\n".join(terminal_text(describe_message(m)) for m in rows if m is not None)
            db.session.rollback()
            if text:
                print(text, flush=True)  # the terminal is where the mail goes
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("printing notifications failed")
        finally:
            db.session.remove()


class OutboxWorker:
    """One channel's delivery thread in this process: takes lists of outbox ids and delivers
    them, off every request. Started on first use, and again in a forked worker process (a
    thread does not survive ``fork``). Lists are delivered by one run
    (idp.services.outbox.DeliveryRun) for as long as any of its conversations is in flight: a
    list submitted meanwhile joins it at once, so that a relying party that hangs until its
    deadline holds up no later token of another relying party, while its own wait for it (one
    conversation per recipient at a time, a few conversations at once). A run stops a lane at
    its first failure (a relying party's, or the mail relay's, ``Channel.stop_after_failure``):
    a relay that hangs costs one timeout per turn, however many messages wait, and the rest stay
    due for the prune job's retry, which comes through these threads too
    (``prune_if_claimed``)."""

    #: Put on the queue when a conversation ends: the run records its outcome and starts more.
    _ENDED: ClassVar[list[int]] = []

    def __init__(self, app: Flask, channel: str) -> None:
        self.app = app
        self.channel = channel
        self.queue: queue.Queue[list[int]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, ids: list[int]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                name = f"idp-outbox-{self.channel}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
        self.queue.put(ids)

    def _run(self) -> None:
        while True:
            taken = [self.queue.get()]
            try:
                if any(item is not self._ENDED for item in taken):
                    self._deliver(taken)
            finally:
                for _ in taken:
                    self.queue.task_done()

    def _deliver(self, taken: list[list[int]]) -> None:
        """One run, from the lists in ``taken`` until nothing it holds is in flight or waiting,
        adding each list (to ``taken``) as it comes; never raises."""
        with self.app.app_context():
            try:
                channels = services().outbox_channels()
                run = DeliveryRun(db.session(), channels, stop_on_failure=True, on_ended=self._wake)
                with run:
                    added = 0
                    while True:
                        with contextlib.suppress(queue.Empty):
                            while True:
                                taken.append(self.queue.get_nowait())
                        run.settle(block=False)
                        ids = [row_id for listed in taken[added:] for row_id in listed]
                        added = len(taken)
                        run.add(ids, clock().now())
                        if run.idle:
                            return
                        # A write the database refused is tried again on the run's next tick,
                        # whether or not a conversation ends or a list comes by then.
                        with contextlib.suppress(queue.Empty):
                            taken.append(self.queue.get(timeout=run.wait_limit))
            except Exception:
                db.session.rollback()
                logging.getLogger(__name__).exception("delivering the outbox failed")
            finally:
                db.session.remove()

    def _wake(self) -> None:
        self.queue.put(self._ENDED)

    def drain(self) -> None:
        """Wait until every submitted list was attempted (tests; a graceful stop)."""
        self.queue.join()


def outbox_worker(app: Flask, channel: str) -> OutboxWorker:
    """This process's delivery thread for ``channel`` (``OutboxMessage.channel``)."""
    key = f"idp.outbox_worker.{channel}"
    worker = app.extensions.get(key)
    if not isinstance(worker, OutboxWorker):
        worker = app.extensions.setdefault(key, OutboxWorker(app, channel))
    return worker


def drain_outbox(app: Flask) -> None:
    """Wait until every delivery handed to this process's delivery threads was attempted."""
    for worker in list(app.extensions.values()):
        if isinstance(worker, OutboxWorker):
            worker.drain()


def deliver_left_over() -> None:
    """At the end of an application context without a response (the CLI): deliver what it
    committed, now that its transactions are over."""
    committed = _committed_to_outbox()
    ids = [row_id for channel_ids in committed.values() for row_id in channel_ids]
    if ids:
        db.session.rollback()  # whatever was left uncommitted is not the outbox's to commit
        try:
            deliver(db.session(), services().outbox_channels(), ids, clock().now())
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("delivering the outbox failed")


def schedule_checkpoint(response: Answered) -> Answered:
    """SQLite: at most once per ``CHECKPOINT_INTERVAL`` per process, a checkpoint after the
    response has been sent (idp.thin_reads ``ThinReads.checkpoint``), so that no request waits
    for one inside its commit."""
    reads = runtime().reads
    if reads is not None and reads.checkpoints.due():
        response.call_on_close(reads.checkpoint)
    return response


def schedule_prune(response: Answered) -> Answered:
    """Opportunistic pruning (idp.services.retention): at most once per ``prune_interval`` per
    node, after the response has been sent, so that no request waits for it."""
    if runtime().prune_schedule.due():
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        response.call_on_close(lambda: prune_if_claimed(app))
    return response


def prune_if_claimed(app: Flask) -> dict[str, int] | None:
    """Prune a bounded amount if this node wins this interval's claim, and hand the outbox's
    due retries to the delivery threads; never raises."""
    with app.app_context():
        try:
            schedule = runtime().prune_schedule
            now = clock().now()
            if not claim_run(db.session(), now, schedule.claim_interval()):
                return None
            built = services()
            counts = prune(db.session(), built.retention(now), max_batches=OPPORTUNISTIC_BATCHES)
            schedule.after_run(counts)
            # The retries go to the delivery threads, as a request's deliveries do: on this
            # request's thread a relay that hangs would hold it (docs/operations.md, "Mail").
            retries = {channel.name: due_ids(db.session(), channel.name, now)
                       for channel in built.outbox_channels()}  # fmt: skip
            db.session.rollback()
            for channel_name, ids in retries.items():
                if ids:
                    outbox_worker(app, channel_name).submit(ids)
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("opportunistic prune failed")
            return None
        finally:
            db.session.remove()
        # "3 access_tokens", not "access_tokens: 3": the log redaction masks values whose key
        # names a secret, and a count is none.
        pruned = ", ".join(f"{count} {table}" for table, count in counts.items() if count)
        # A prune that found nothing is worth a line only at DEBUG (a quiet terminal).
        level = logging.INFO if pruned else logging.DEBUG
        logging.getLogger(__name__).log(level, "pruned expired rows: %s", pruned or "none")
        return counts
