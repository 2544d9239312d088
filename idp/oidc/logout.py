"""Ending a browser session for RP-initiated logout."""

from __future__ import annotations

from flask import g

from idp.composition import clock, request_context
from idp.extensions import db
from idp.models import BrowserSession
from idp.services import audit
from idp.services.sessions import end_sessions


def end_browser_session(session: BrowserSession | None) -> None:
    """End this browser's session (``session``, decided by the view: only ever the requesting
    browser's own, ``idp.services.sessions.rp_logout``), the tokens it authorised, and tell the
    clients of the session (idp.services.sessions.end_sessions)."""
    if session is None:
        return
    end_sessions(db.session(), BrowserSession.id_hash == session.id_hash, "logout", clock().now())
    audit.record(
        db.session(), "logout", subject_id=session.user_id, context=request_context(),
        sid=session.sid,
    )  # fmt: skip
    g.idp_session_ended = True
