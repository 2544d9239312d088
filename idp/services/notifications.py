"""Notifying users: messages queued in the outbox with the request's transaction, and sent by SMTP
only after that transaction commits (docs/operations.md, "Mail").

- ``Notifier`` renders a message from its template (``idp/templates/mail/<kind>.txt``) and adds it
  to the outbox in the caller's transaction. Nothing leaves the machine here: a request that rolls
  back leaves no message and announces nothing.
- After the commit, the outbox (idp.services.outbox, shared with back-channel logout) claims each
  new message once, hands it to ``Mailer`` outside any transaction, and marks it sent. A message
  that could not be sent stays queued with a backoff; the prune job retries it.
- A one-time secret (a link) stays in a stored body only until the message is sent or the secret
  expires; then the body is replaced by its redacted form.
- ``smtps://`` and ``smtp+starttls://`` verify the server's certificate and host name against the
  system trust store (which honours ``SSL_CERT_FILE``/``SSL_CERT_DIR``) and ``smtp_ca_file``.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models import OutboxMessage, User
from idp.services.deadlines import conversation_deadline
from idp.services.outbox import FIRST_RETRY, DeliveryError, Pending

__all__ = ["FIRST_RETRY", "Mailer", "Notifier", "drop_expired_secrets", "render"]

log = logging.getLogger(__name__)

SUBJECTS = {
    "method_added": "A new sign-in method was added to your account",
    "method_removed": "A sign-in method was removed from your account",
    "backup_code_used": "A backup code was used to sign in",
    "passkey_flagged": "A passkey of your account was refused as a possible copy",
    "factor_locked": "A way of signing in to your account was locked",
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

#: Seconds to wait for the SMTP connection and for each answer of the relay (a socket timeout).
SMTP_TIMEOUT = 10
#: Seconds one message's whole SMTP conversation (connection, TLS, login, the message) may take:
#: a socket timeout bounds each read, not the conversation, and a relay that trickles its
#: answers would otherwise hold the node's mail delivery thread as long as it likes. Past it
#: another thread shuts the connection (idp.services.deadlines) and the message stays queued
#: for a retry (docs/operations.md, "Mail").
SMTP_DEADLINE = 30

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
    def __init__(
        self,
        db: Session,
        smtp_url: str = "",
        sender: str = "idp@localhost",
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.db = db
        self.smtp_url = smtp_url
        self.sender = sender
        #: When a message is queued, and so when a secret it carries is redacted by default.
        self.clock = clock

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
        now = self.clock.now()
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
    """The outbox's ``mail`` channel (idp.services.outbox.Channel)."""

    smtp_url: str
    sender: str
    ca_file: str = ""
    name: ClassVar[str] = "mail"
    stop_after_failure: ClassVar[bool] = True

    def prepare(self, message: Pending) -> Callable[[], None]:
        """Nothing to read first: the conversation with the relay is the whole delivery."""
        return lambda: self.send(message)

    def send(self, message: Pending) -> None:
        try:
            self.send_mail(message.recipient, message.subject, message.body)
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(type(error).__name__) from error

    def send_mail(self, recipient: str, subject: str, body: str) -> None:
        """Send one message within ``SMTP_DEADLINE``; raises ``OSError``/``SMTPException``
        (``ssl.SSLError`` is an ``OSError``; past the deadline ``TimeoutError``) when it could
        not be handed to the server."""
        parts = urlsplit(self.smtp_url)
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.sender, recipient, subject
        email.set_content(body)
        host = parts.hostname or "localhost"
        smtp: smtplib.SMTP
        if parts.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(timeout=SMTP_TIMEOUT, context=tls_context(self.ca_file))
        else:
            smtp = smtplib.SMTP(timeout=SMTP_TIMEOUT)
        # Connected below, under the deadline (the constructor would connect and read the
        # greeting before it starts); the TLS name check reads the host from ``_host``, which
        # only the constructor sets.
        smtp._host = host  # type: ignore[attr-defined]
        with conversation_deadline(SMTP_DEADLINE, lambda: getattr(smtp, "sock", None)) as cut:
            try:
                smtp.connect(host, parts.port or (465 if parts.scheme == "smtps" else 25))
                with smtp:
                    if parts.scheme == "smtp+starttls":
                        # Raises SMTPNotSupportedError when the server offers no STARTTLS: never
                        # a silent fall-back to plain text.
                        smtp.starttls(context=tls_context(self.ca_file))
                    if parts.username:
                        smtp.login(unquote(parts.username), unquote(parts.password or ""))
                    smtp.send_message(email)
            except (OSError, smtplib.SMTPException):
                if cut.is_set():
                    raise TimeoutError(f"no delivery within {SMTP_DEADLINE} seconds") from None
                raise
            finally:
                smtp.close()


def drop_expired_secrets(db: Session, now: datetime) -> int:
    """Replace the bodies whose one-time secret expired by their redacted form (sent or not:
    an expired link opens nothing, and an unsent one is no longer worth sending)."""
    result = db.execute(
        update(OutboxMessage)
        .where(OutboxMessage.redacted_body.is_not(None), OutboxMessage.secret_expires_at <= now)
        .values(
            body=func.coalesce(OutboxMessage.redacted_body, OutboxMessage.body),
            redacted_body=None,
            next_attempt_at=None,
        ),
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
    """Mail with an id above ``after_id``, oldest first; with ``limit``, the newest ones (the
    outbox's other channel, back-channel logout tokens, is not mail: idp.services.outbox)."""
    query = select(OutboxMessage).where(
        OutboxMessage.id > after_id, OutboxMessage.channel == Mailer.name
    )
    if limit is None:
        return list(db.scalars(query.order_by(OutboxMessage.id)))
    newest = list(db.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit)))
    return newest[::-1]
