"""Whether a browser session read earlier in a request still stands when a grant is opened in
it (docs/architecture.md, "A code and its session's ending are ordered"): the authorization
endpoint and the device approval ask, each before its grant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import BrowserSession

#: ``Session.info``: the sids of the sessions this transaction inserted, each with the transaction.
_INSERTED = "idp.sessions.inserted"


def inserted_in_this_transaction(db: Session, sid: str) -> None:
    """Noted by ``SessionService.create``: a session nobody else sees yet (``session_stands``)."""
    db.info.setdefault(_INSERTED, {})[sid] = db.get_transaction()


def session_stands(db: Session, session: BrowserSession) -> bool:
    """Whether ``session``, accepted earlier in this request, is still live, its row locked
    against its ending until this transaction ends: asked before a grant is opened in it.

    A session's ending revokes its grants and tells their clients (Back-Channel Logout 1.0
    2.7, RP-Initiated Logout 2): a grant opened in a session that ended after it was read
    would give the client a code, and tokens, whose ``sid`` no logout token names again. The
    ending (``end_sessions``) runs, in order: its conditional UPDATE of the session row, the
    SELECT of the session's grants, their revocation and the logout tokens, then its COMMIT.
    This SELECT ... FOR SHARE (PostgreSQL; SQLite's BEGIN IMMEDIATE, idp.database) orders
    the two: an ending whose UPDATE came first is waited for and its ``revoked_at`` seen (READ
    COMMITTED re-reads the locked row); one that comes second waits at its UPDATE until this
    transaction commits, and its SELECT of grants, a statement of its own, then finds the
    grant. FOR SHARE, not FOR UPDATE: a session's parallel authorization requests do not
    wait for each other. A device approval takes the same lock before its grant
    (idp.services.device).

    A session this transaction inserted (a sign-in that answers an authorization request in
    its own request) stands without a statement: nobody else can see its row, so nothing can
    end it before this transaction commits, and an ending after that finds the grant."""
    inserted = db.info.get(_INSERTED, {})
    if session.sid in inserted and inserted[session.sid] is db.get_transaction():
        return True
    live = db.scalar(
        select(BrowserSession.sid)
        .where(BrowserSession.sid == session.sid, BrowserSession.revoked_at.is_(None))
        .with_for_update(read=True)
    )
    return live is not None
