"""Work after the response: delivering what a request committed to the outbox (mail, back-channel
logout tokens) and opportunistic pruning (idp.services.retention), off every request."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from flask import Flask, current_app

from idp.composition import clock, runtime, services
from idp.extensions import db
from idp.models import OutboxMessage
from idp.services.notifications import Mailer, describe_message, terminal_text
from idp.services.outbox import deliver, take_committed
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
    """Deliver what this request committed to the outbox once the response is sent, so that no
    user waits for SMTP or a relying party (idp.services.outbox): mail when the response closes;
    back-channel logout tokens on the node's delivery thread (``OutboxWorker``), so that a
    relying party that hangs holds no request worker either."""
    committed = _committed_to_outbox()
    if not committed:  # most requests: nothing to deliver
        return response
    mail_ids = committed.pop(Mailer.name, [])
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if mail_ids and services().mailer is not None:
        response.call_on_close(lambda: deliver_committed(app, mail_ids))
    elif mail_ids and runtime().settings.prints_mail:
        # Development without SMTP: the terminal is where the mail goes (docs/operations.md).
        response.call_on_close(lambda: print_committed(app, mail_ids))
    others = [row_id for ids in committed.values() for row_id in ids]
    if others:
        outbox_worker(app).submit(others)
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


def deliver_committed(app: Flask, ids: list[int]) -> int:
    """Deliver ``ids`` in a fresh application context; never raises."""
    with app.app_context():
        try:
            return deliver(db.session(), services().outbox_channels(), ids, clock().now())
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("delivering the outbox failed")
            return 0
        finally:
            db.session.remove()


class OutboxWorker:
    """This process's delivery thread: takes lists of outbox ids and delivers them, one list
    after the other, off every request. Started on first use, and again in a forked worker
    process (a thread does not survive ``fork``)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.queue: queue.Queue[list[int]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, ids: list[int]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="idp-outbox", daemon=True)
                self._thread.start()
        self.queue.put(ids)

    def _run(self) -> None:
        while True:
            ids = self.queue.get()
            try:
                deliver_committed(self.app, ids)
            finally:
                self.queue.task_done()

    def drain(self) -> None:
        """Wait until every submitted list was attempted (tests; a graceful stop)."""
        self.queue.join()


def outbox_worker(app: Flask) -> OutboxWorker:
    worker = app.extensions.get("idp.outbox_worker")
    if not isinstance(worker, OutboxWorker):
        worker = app.extensions.setdefault("idp.outbox_worker", OutboxWorker(app))
    return worker


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
    """Prune a bounded amount if this node wins this interval's claim; never raises."""
    with app.app_context():
        try:
            schedule = runtime().prune_schedule
            now = clock().now()
            if not claim_run(db.session(), now, schedule.claim_interval()):
                return None
            built = services()
            counts = prune(db.session(), built.retention(now), max_batches=OPPORTUNISTIC_BATCHES,
                           channels=built.outbox_channels())  # fmt: skip
            schedule.after_run(counts)
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
