"""Notifying users of security events: SMTP when configured, else the outbox table and the log."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from typing import Any

from sqlalchemy.orm import Session

from idp.models import OutboxMessage, User
from idp.models.base import utcnow

log = logging.getLogger(__name__)

SUBJECTS = {
    "method_added": "A new sign-in method was added to your account",
    "method_removed": "A sign-in method was removed from your account",
    "backup_code_used": "A backup code was used to sign in",
    "password_changed": "Your password was changed",
    "login_link_issued": "A one-time sign-in link was created for you",
    "email_change_requested": "Confirm your new email address",
    "email_changed": "The email address of your account was changed",
    "login_link": "Your one-time sign-in link",
    "login_link_used": "Your one-time sign-in link was used",
    "invite": "You are invited to create an account",
    "signup_link": "Confirm your email address to create your account",
    "signup_existing": "Someone tried to sign up with your email address",
}
BODIES = {
    "method_added": "{method} was added to your idp account.",
    "method_removed": "{method} was removed from your idp account.",
    "backup_code_used": "A backup code was used to sign in to your idp account. "
    "{remaining} backup codes are left.",
    "password_changed": "The password of your idp account was changed.",
    "login_link_issued": "An administrator created a one-time sign-in link for you.",
    "email_change_requested": "To use this address for your idp account, open {link}",
    "email_changed": "Your idp account now uses {new_email} instead of this address.",
    "login_link": "An administrator created a one-time sign-in link for you. It works once, "
    "until {expires_at}:\n\n{link}\n\nOpening it asks you to confirm; then you add a new passkey.",
    "login_link_used": "Your one-time sign-in link was used to sign in to your idp account.",
    "invite": "{inviter} invited you to create an idp account. The link works once, until "
    "{expires_at}:\n\n{link}",
    "signup_link": "To create your idp account with this address, open this link (it works once, "
    "until {expires_at}):\n\n{link}",
    "signup_existing": "Someone tried to create an idp account with this address, but you already "
    "have one. Sign in at {login_url}. If it was not you, you can ignore this message.",
}
#: Details that are secrets (a one-time link): kept out of the stored ``details``, and out of the
#: stored body once the mail has gone out (until then the outbox is the only way to deliver it).
SECRET_DETAILS = frozenset({"link"})
FOOTER = "\n\nIf this was not you, sign in and review your account, or contact your administrator."


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
        body = BODIES[kind].format(**details) + FOOTER
        message = OutboxMessage(
            user_id=user_id, recipient=recipient, kind=kind, subject=SUBJECTS[kind], body=body,
            details={k: str(v) for k, v in details.items() if k not in SECRET_DETAILS},
        )  # fmt: skip
        self.db.add(message)
        if self.smtp_url:
            self._send(message)
            if message.sent_at is not None:
                for key in SECRET_DETAILS & details.keys():
                    message.body = message.body.replace(str(details[key]), "(sent by mail)")
        else:
            log.info("notification %s for user %s kept in the outbox", kind, user_id)
        return message

    def _send(self, message: OutboxMessage) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(self.smtp_url)
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = (
            self.sender,
            message.recipient,
            message.subject,
        )
        email.set_content(message.body)
        try:
            smtp_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
            with smtp_class(parts.hostname or "localhost", parts.port or 25, timeout=10) as smtp:
                if parts.scheme == "smtp+starttls":
                    smtp.starttls()
                if parts.username:
                    smtp.login(parts.username, parts.password or "")
                smtp.send_message(email)
            message.sent_at = utcnow()
        except (OSError, smtplib.SMTPException):
            # The message stays in the outbox; a failed mail never fails the user's request.
            log.warning("sending notification %s failed; kept in the outbox", message.kind)
