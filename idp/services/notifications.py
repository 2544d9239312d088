"""Notifying users: messages queued in the outbox with the request's transaction, and sent by SMTP
only after that transaction commits (docs/operations.md, "Mail").

- ``Notifier`` renders a message from its template (``idp/templates/mail/<kind>.txt``) and adds it
  to the outbox in the caller's transaction. Nothing leaves the machine here: a request that rolls
  back leaves no message and announces nothing.
- After the commit, ``deliver`` claims each new message (one conditional UPDATE, so two nodes never
  both send it), sends it outside any transaction, and marks it sent. A message that could not be
  sent stays queued with a backoff; the prune job (idp.services.retention, ``idp prune``) calls
  ``deliver_due`` to retry it.
- A one-time secret (a link) stays in a stored body only until the message is sent or the secret
  expires; then the body is replaced by its redacted form.
- ``smtps://`` and ``smtp+starttls://`` verify the server's certificate and host name against the
  system trust store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``) and ``smtp_ca_file``.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session

from idp.models import OutboxMessage, User
from idp.models.base import utcnow

log = logging.getLogger(__name__)

SUBJECTS = {
    "method_added": "A new sign-in method was added to your account",
    "method_removed": "A sign-in method was removed from your account",
    "backup_code_used": "A backup code was used to sign in",
    "backup_codes_regenerated": "New backup codes were created for your account",
    "password_changed": "Your password was changed",
    "login_link_issued": "A one-time sign-in link was created for you",
    "email_change_requested": "Confirm your new email address",
    "email_change_pending": "A change of your account's email address was requested",
    "email_changed": "The email address of your account was changed",
    "login_link": "Your one-time sign-in link",
    "login_link_used": "Your one-time sign-in link was used",
    "invite": "You are invited to create an account",
    "signup_link": "Confirm your email address to create your account",
    "signup_existing": "Someone tried to sign up with your email address",
}
#: Details that are secrets (a one-time link): kept out of the stored ``details``, and out of the
#: stored body once the mail has gone out or the secret expired (until then the outbox is the only
#: way to deliver it when no SMTP server is configured).
SECRET_DETAILS = frozenset({"link"})
#: What a redacted body says where the link was.
REDACTED = "(a one-time link, removed from this copy once it was sent or expired)"
#: A message whose secret names no expiry loses it after this long anyway.
DEFAULT_SECRET_LIFETIME = timedelta(days=1)

#: Retries after a failed delivery: 1, 2, 4, ... minutes, at most an hour apart, then given up
#: (the message stays in the outbox, unsent, and the log says so). The prune job runs the retries,
#: so they are also at most as frequent as ``prune_interval``.
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)
MAX_ATTEMPTS = 12
#: SMTP connection and command timeout, seconds.
SMTP_TIMEOUT = 10
#: Due messages one prune run sends at most.
DELIVERY_BATCH = 100

_templates = Environment(
    loader=PackageLoader("idp", "templates/mail"),
    autoescape=False,  # plain-text mail: nothing is HTML  # noqa: S701
    undefined=StrictUndefined,
    keep_trailing_newline=False,
)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return str(value)


def render(kind: str, details: dict[str, Any]) -> str:
    return _templates.get_template(f"{kind}.txt").render(
        **{key: _text(value) for key, value in details.items()}
    )


class Notifier:
    def __init__(self, db: Session, smtp_url: str = "", sender: str = "idp@localhost") -> None:
        self.db = db
        self.smtp_url = smtp_url
        self.sender = sender

    def notify(
        self, user: User, kind: str, *, recipient: str | None = None, **details: Any
    ) -> OutboxMessage:
        return self._queue(user.id, recipient or user.email, kind, details)

    def notify_address(self, recipient: str, kind: str, **details: Any) -> OutboxMessage:
        """A message to an address with no account behind it (a sign-up's email proof)."""
        return self._queue(None, recipient, kind, details)

    def _queue(
        self, user_id: str | None, recipient: str, kind: str, details: dict[str, Any]
    ) -> OutboxMessage:
        now = utcnow()
        secrets = SECRET_DETAILS & details.keys()
        redacted_body = secret_expires_at = None
        if secrets:
            redacted_body = render(kind, {**details, **dict.fromkeys(secrets, REDACTED)})
            expires_at = details.get("expires_at")
            secret_expires_at = (
                expires_at if isinstance(expires_at, datetime) else now + DEFAULT_SECRET_LIFETIME
            )
        message = OutboxMessage(
            user_id=user_id, recipient=recipient, kind=kind, subject=SUBJECTS[kind],
            body=render(kind, details), redacted_body=redacted_body,
            secret_expires_at=secret_expires_at,
            details={k: _text(v) for k, v in details.items() if k not in secrets},
            created_at=now, attempts=0,
            # Due at once, but only sent once this transaction has committed (``deliver``).
            next_attempt_at=now if self.smtp_url else None,
        )  # fmt: skip
        self.db.add(message)
        if not self.smtp_url:
            log.info("notification %s for user %s kept in the outbox", kind, user_id)
        return message


# -- after the commit ------------------------------------------------------------------------------
_FLUSHED = "idp.outbox.flushed"
_COMMITTED = "idp.outbox.committed"


@event.listens_for(Session, "after_flush")
def _remember_queued(session: Session, _flush_context: Any) -> None:
    """Note the ids of messages written in this transaction (``session.new`` still holds them
    during ``after_flush``): ``deliver`` sends those due for SMTP, and without SMTP a development
    server prints them (``terminal_text``)."""
    ids = [obj.id for obj in session.new if isinstance(obj, OutboxMessage)]
    if ids:
        session.info.setdefault(_FLUSHED, []).extend(ids)


@event.listens_for(Session, "after_commit")
def _queue_committed(session: Session) -> None:
    flushed = session.info.pop(_FLUSHED, None)
    if flushed:
        session.info.setdefault(_COMMITTED, []).extend(flushed)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    # The transaction's messages are gone with it: nothing to send.
    session.info.pop(_FLUSHED, None)


def take_committed(session: Session) -> list[int]:
    """The ids of messages committed through ``session`` and not yet handed to ``deliver``."""
    ids: list[int] = session.info.pop(_COMMITTED, [])
    return ids


# -- SMTP ------------------------------------------------------------------------------------------
def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """A verifying client context: certificate chain and host name (RFC 8314 3.3; RFC 3207 4.1
    leaves the check to the client). The system store is loaded through OpenSSL's default paths,
    so ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` apply; ``ca_file`` adds a private CA beside it."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


@dataclass(frozen=True)
class Mailer:
    smtp_url: str
    sender: str
    ca_file: str = ""

    def send(self, recipient: str, subject: str, body: str) -> None:
        """Send one message; raises ``OSError``/``smtplib.SMTPException`` (``ssl.SSLError`` is
        an ``OSError``) when it could not be handed to the server."""
        parts = urlsplit(self.smtp_url)
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, recipient, subject
        email.set_content(body)
        host = parts.hostname or "localhost"
        smtp: smtplib.SMTP
        if parts.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(
                host, parts.port or 465, timeout=SMTP_TIMEOUT, context=tls_context(self.ca_file)
            )
        else:
            smtp = smtplib.SMTP(host, parts.port or 25, timeout=SMTP_TIMEOUT)
        with smtp:
            if parts.scheme == "smtp+starttls":
                # Raises SMTPNotSupportedError when the server offers no STARTTLS: never a
                # silent fall-back to plain text.
                smtp.starttls(context=tls_context(self.ca_file))
            if parts.username:
                smtp.login(unquote(parts.username), unquote(parts.password or ""))
            smtp.send_message(email)


def _retry_after(attempts: int) -> timedelta:
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LONGEST_RETRY)


def _claim(db: Session, message_id: int, now: datetime) -> OutboxMessage | None:
    """Take one due message for this attempt, or None if it is not due or another node took it:
    ``next_attempt_at`` moves to the retry time in the same conditional UPDATE, so a crash or a
    failure leaves it queued for the backoff, and a parallel claim finds it not due."""
    attempts = db.scalar(
        select(OutboxMessage.attempts).where(OutboxMessage.id == message_id, _due(now))
    )
    if attempts is None:
        db.commit()
        return None
    tries = attempts + 1
    claimed = db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.attempts == attempts, _due(now))
        .values(
            attempts=tries,
            next_attempt_at=now + _retry_after(tries) if tries < MAX_ATTEMPTS else None,
        )
    )
    db.commit()
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    return db.get(OutboxMessage, message_id)


def _due(now: datetime) -> Any:
    return and_(
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.next_attempt_at <= now,
        or_(OutboxMessage.secret_expires_at.is_(None), OutboxMessage.secret_expires_at > now),
    )


def deliver(
    db: Session,
    mailer: Mailer,
    message_ids: list[int],
    now: datetime,
    *,
    stop_on_failure: bool = False,
) -> int:
    """Send the given messages if they are due; returns how many were sent. Each is claimed,
    sent with no transaction open (so no lock is held while SMTP talks), then marked sent with
    its secret dropped. Never raises for a failed delivery: the message stays queued.
    ``stop_on_failure``: after one failure leave the rest for the next run (a server that is down
    would otherwise cost a timeout per message)."""
    sent = 0
    for message_id in message_ids:
        message = _claim(db, message_id, now)
        if message is None:
            continue
        recipient, subject, body, kind = (
            message.recipient, message.subject, message.body, message.kind
        )  # fmt: skip
        db.commit()  # end the read transaction before talking to the server
        try:
            mailer.send(recipient, subject, body)
        except (OSError, smtplib.SMTPException) as error:
            log.warning(
                "sending notification %s (outbox %s) failed, kept for a retry: %s",
                kind, message_id, type(error).__name__,
            )  # fmt: skip
            if stop_on_failure:
                break
            continue
        db.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(
                sent_at=utcnow(),
                next_attempt_at=None,
                body=_redacted_or_body(),
                redacted_body=None,
            )
        )
        db.commit()
        sent += 1
    return sent


def _redacted_or_body() -> Any:
    from sqlalchemy import func

    return func.coalesce(OutboxMessage.redacted_body, OutboxMessage.body)


def deliver_due(db: Session, mailer: Mailer, now: datetime, limit: int = DELIVERY_BATCH) -> int:
    """The prune job's retry: send up to ``limit`` messages whose next attempt is due."""
    ids = list(
        db.scalars(
            select(OutboxMessage.id)
            .where(_due(now))
            .order_by(OutboxMessage.next_attempt_at)
            .limit(limit)
        )
    )
    db.commit()
    return deliver(db, mailer, ids, now, stop_on_failure=True)


def drop_expired_secrets(db: Session, now: datetime) -> int:
    """Replace the bodies whose one-time secret expired by their redacted form (sent or not:
    an expired link opens nothing, and an unsent one is no longer worth sending)."""
    result = db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.redacted_body.is_not(None), OutboxMessage.secret_expires_at <= now)
        .values(body=_redacted_or_body(), redacted_body=None, next_attempt_at=None),
        execution_options={"synchronize_session": False},
    )
    db.commit()
    return int(getattr(result, "rowcount", 0) or 0)


# -- reading the outbox (`idp outbox`, a development terminal) ----------------------------------
def delivery_state(message: OutboxMessage) -> str:
    """Where a message stands: "sent" only once an SMTP server accepted it."""
    if message.sent_at is not None:
        return "sent"
    if message.next_attempt_at is not None:
        return "queued for the mail server"
    if message.attempts:
        return f"not sent: the mail server refused it {message.attempts} times"
    return "not sent: no mail server is configured (smtp_url)"


def describe_message(message: OutboxMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "created_at": message.created_at.isoformat(),
        "recipient": message.recipient,
        "kind": message.kind,
        "subject": message.subject,
        "state": delivery_state(message),
        "sent_at": message.sent_at.isoformat() if message.sent_at else None,
        # Holds the message's link until it is sent or expires (then its redacted form).
        "body": message.body,
    }


def terminal_text(data: dict[str, Any]) -> str:
    """A message as a block of terminal lines, its body (and link) included."""
    rule = "-" * 72
    return "\n".join([
        rule,
        f"Mail #{data['id']} to {data['recipient']} ({data['state']})",
        f"Subject: {data['subject']}",
        "",
        data["body"].rstrip(),
        rule,
    ])  # fmt: skip


def outbox_messages(
    db: Session, *, after_id: int = 0, limit: int | None = None
) -> list[OutboxMessage]:
    """Messages with an id above ``after_id``, oldest first; with ``limit``, the newest ones."""
    query = select(OutboxMessage).where(OutboxMessage.id > after_id)
    if limit is None:
        return list(db.scalars(query.order_by(OutboxMessage.id)))
    newest = list(db.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit)))
    return newest[::-1]
