"""What the account portal shows and changes: sessions, connected apps, activity, step-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from idp.models import (
    AccessToken,
    AuditEvent,
    BrowserSession,
    Client,
    Consent,
    Grant,
    Passkey,
    RefreshToken,
    TotpCredential,
    User,
)
from idp.services import backchannel_logout
from idp.services.assurance import (
    ACR_LEVELS,
    ACR_MFA,
    ACR_PASSWORD,
    ACR_PHISHING_RESISTANT,
)
from idp.services.pages import Page, keyset_page
from idp.services.passkeys import has_working_passkey
from idp.services.sessions import SessionService, end_sessions
from idp.services.user_agents import describe_user_agent

__all__ = ["describe_user_agent"]  # the portal's, the console's and the exports' device names

#: sensitive actions need a sign-in this recent ...
STEP_UP_WINDOW = timedelta(minutes=5)
#: ... and at least as strong as the user's strongest method.
UNUSED_PASSKEY_AFTER = timedelta(days=180)
ACTIVITY_PAGE_SIZE = 20


def strongest_acr(db: Session, user: User) -> str:
    """The acr of the strongest way the user can sign in. A passkey flagged as a possible clone
    is refused at every sign-in until removed (WebAuthn L3 6.1.1), so it is no way in: asking
    for it would leave nothing that passes the step-up to remove it or add a new passkey."""
    if has_working_passkey(db, user.id):
        return ACR_PHISHING_RESISTANT
    totp = db.get(TotpCredential, user.id)
    if totp is not None and totp.confirmed_at is not None:
        return ACR_MFA
    return ACR_PASSWORD


def step_up_satisfied(db: Session, session: BrowserSession, now: datetime) -> bool:
    """A recent sign-in, at least as strong as the user's strongest method.

    A restricted session (login link, invite, sign-up confirmation, backup-code recovery) stands
    in for a lost or missing method, so its strength is not compared; but it is held to the same
    window as any session: older than that, it can no longer add a sign-in method
    (docs/security.md, Sessions)."""
    if now - session.auth_time > STEP_UP_WINDOW:
        return False
    if session.restricted:
        return True
    return ACR_LEVELS.get(session.acr, 0) >= ACR_LEVELS[strongest_acr(db, session.user)]


def passkey_status(passkey: Passkey, now: datetime) -> str:
    if passkey.flagged_at is not None:
        return "flagged"
    last = passkey.last_used_at or passkey.created_at
    if now - last > UNUSED_PASSKEY_AFTER:
        return "unused"
    return "active"


def backup_words(passkey: Passkey) -> str:
    """Where a passkey lives, as the account pages say it. WebAuthn L3 6.1.3: backup eligible
    (BE) without backup state (BS) is a multi-device credential "not currently backed up", on
    its one device until its manager backs it up; only BS is "Synced" (docs/users/passkeys.md:
    backed up, on your other devices). BS is the latest sign-in's (``record_use``)."""
    if passkey.backed_up:
        return "Synced"
    return "Not backed up yet" if passkey.backup_eligible else "This device only"


@dataclass(frozen=True)
class SessionView:
    session: BrowserSession
    device: str
    current: bool


def active_sessions(
    db: Session, user: User, current: BrowserSession, now: datetime, sessions: SessionService
) -> list[SessionView]:
    """The user's sessions that the session loader would accept, and only those: ``sessions``
    is the loader itself (with the policy's lifetimes), so the list cannot drift from it."""
    rows = db.scalars(
        select(BrowserSession)
        .where(
            BrowserSession.user_id == user.id,
            BrowserSession.revoked_at.is_(None),
            BrowserSession.expires_at > now,
        )
        .order_by(BrowserSession.last_seen_at.desc())
    )
    return [
        SessionView(
            session=s,
            device=describe_user_agent(s.user_agent),
            current=s.id_hash == current.id_hash,
        )
        for s in rows
        if sessions.is_live(s, now)
    ]


def revoke_session(db: Session, user: User, sid: str, now: datetime) -> bool:
    """End one of the user's sessions; every node sees it on the session's next request."""
    condition = and_(BrowserSession.user_id == user.id, BrowserSession.sid == sid)
    return end_sessions(db, condition, "session_revoked", now) > 0


def has_other_sessions(db: Session, current: BrowserSession, now: datetime) -> bool:
    return (
        db.scalar(
            select(BrowserSession.sid)
            .where(
                BrowserSession.user_id == current.user_id,
                BrowserSession.id_hash != current.id_hash,
                BrowserSession.revoked_at.is_(None),
                BrowserSession.expires_at > now,
            )
            .limit(1)
        )
        is not None
    )


def revoke_other_sessions(db: Session, user: User, keep: BrowserSession, now: datetime) -> None:
    condition = and_(BrowserSession.user_id == user.id, BrowserSession.id_hash != keep.id_hash)
    end_sessions(db, condition, "session_revoked", now)


@dataclass(frozen=True)
class ConnectedApp:
    """A client that can act for the user: one they consented to (``consented``), or one that
    holds a live refresh token (``offline``: a phone app, a CLI), a first-party one included,
    whose sign-in asked no consent."""

    client: Client
    scopes: list[str]
    #: When the consent was given; without one, when the oldest live grant was made.
    granted_at: datetime
    last_used_at: datetime | None
    consented: bool = True
    offline: bool = False
    #: Whether it holds access now: a live grant with a refresh token or an access token that
    #: would be accepted. An app listed for its remembered consent alone holds none (its grants
    #: were taken back or expired): the consent lets it sign the user in again without asking
    #: (OIDC Core 3.1.2.4), so it stays listed, to be withdrawn, but not as holding access.
    live: bool = True


def _live_refresh_grants(user: User, now: datetime) -> Select[str, str, datetime]:
    """The user's grants that still hold a refresh token that would be accepted: the grant not
    revoked, the token neither spent nor expired."""
    live_token = (
        select(RefreshToken.token_hash)
        .where(
            RefreshToken.grant_id == Grant.id,
            RefreshToken.consumed_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .exists()
    )
    return select(Grant.client_id, Grant.scope, Grant.created_at).where(
        Grant.user_id == user.id, Grant.revoked_at.is_(None), live_token
    )


def _holds_access(user: User, now: datetime) -> Any:
    """Whether the client of the enclosing row holds a live grant of ``user``: not revoked, with
    a refresh token or an access token that would be accepted (idp.services.tokens)."""
    refresh = (
        select(RefreshToken.token_hash)
        .where(RefreshToken.grant_id == Grant.id, RefreshToken.consumed_at.is_(None),
               RefreshToken.expires_at > now)
        .exists()
    )  # fmt: skip
    access = (
        select(AccessToken.jti)
        .where(AccessToken.grant_id == Grant.id, AccessToken.revoked_at.is_(None),
               AccessToken.expires_at > now)
        .exists()
    )  # fmt: skip
    held = select(Grant.id).where(
        Grant.user_id == user.id, Grant.client_id == Client.client_id, Grant.revoked_at.is_(None),
        or_(refresh, access),
    )  # fmt: skip
    return held.exists().label("live")


def connected_apps(db: Session, user: User, now: datetime) -> list[ConnectedApp]:
    """Every client that can act for the user, with the last time one of its tokens was issued:
    the clients they consented to, and the clients holding a live refresh token. A first-party
    client asks no consent, and "sign out everywhere" keeps offline grants (OIDC Core 11,
    docs/integrating.md), so without the second kind a lost phone's app would be nowhere the
    user could see or end it. Two statements, whatever the number of apps: the list, and the
    scopes of the live grants of the apps listed without a consent."""
    grants = _live_refresh_grants(user, now).subquery()
    live = (
        select(grants.c.client_id, func.min(grants.c.created_at).label("since"))
        .group_by(grants.c.client_id)
        .subquery()
    )
    last_use = (
        select(AccessToken.client_id, func.max(AccessToken.issued_at).label("last"))
        .where(AccessToken.user_id == user.id)
        .group_by(AccessToken.client_id)
        .subquery()
    )
    rows = db.execute(
        select(Client, Consent, live.c.since, last_use.c.last, _holds_access(user, now))
        .outerjoin(Consent, and_(Consent.client_id == Client.client_id, Consent.user_id == user.id))
        .outerjoin(live, live.c.client_id == Client.client_id)
        .outerjoin(last_use, last_use.c.client_id == Client.client_id)
        .where(or_(Consent.id.is_not(None), live.c.since.is_not(None)))
        .order_by(Client.name, Client.client_id)
    ).all()
    unconsented = {client.client_id for client, consent, _, _, _ in rows if consent is None}
    granted: dict[str, set[str]] = {}
    if unconsented:
        scoped = _live_refresh_grants(user, now).where(Grant.client_id.in_(unconsented))
        for client_id, scope, _created in db.execute(scoped):
            granted.setdefault(client_id, set()).update(scope.split())
    return [
        ConnectedApp(
            client=client,
            scopes=list(consent.scopes) if consent else sorted(granted.get(client.client_id, ())),
            granted_at=consent.granted_at if consent else since,
            last_used_at=last,
            consented=consent is not None,
            offline=since is not None,
            live=bool(held),
        )
        for client, consent, since, last, held in rows
    ]


@dataclass(frozen=True)
class Disconnected:
    """What disconnecting an app ended: its consent (a first-party app has none), its grants."""

    consent_removed: bool
    grants_revoked: int

    def __bool__(self) -> bool:
        return self.consent_removed or self.grants_revoked > 0


def disconnect_app(db: Session, user: User, client_id: str, now: datetime) -> Disconnected:
    """Remove the consent, if any, and revoke every grant (refresh and access tokens) of that
    client: a first-party app, which holds grants without a consent, is disconnected too."""
    removed = db.execute(
        delete(Consent).where(Consent.user_id == user.id, Consent.client_id == client_id)
    )
    revoked = db.execute(
        update(Grant)
        .where(Grant.user_id == user.id, Grant.client_id == client_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=backchannel_logout.DISCONNECTED)
        .returning(*backchannel_logout.REVOKED_GRANT)
        .execution_options(synchronize_session=False)
    ).all()
    # The app's own sessions of the user end too: it is told, for each session it received
    # tokens in (Back-Channel Logout 1.0 2.7), as when the session at idp ends.
    backchannel_logout.announce_access_ended(db, revoked, now)
    return Disconnected(
        consent_removed=bool(getattr(removed, "rowcount", 0)), grants_revoked=len(revoked)
    )


def client_names(db: Session, client_ids: set[str]) -> dict[str, str]:
    """The names of these clients, by client_id (for the activity page's sentences)."""
    if not client_ids:
        return {}
    rows = db.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(client_ids)))
    return {str(client_id): str(name) for client_id, name in rows}


def activity(db: Session, user: User, cursor: str | None) -> Page[AuditEvent]:
    """The user's own audit events, newest first, a page at a time from the cursor of its Older
    and Newer links (keyset on the log's id, which counts up as events are written;
    idp.services.pages): an event recorded while the user reads neither repeats a row on the
    next page nor hides one, as an OFFSET did, and each page is a range of the index on
    (subject_id, id). A cursor that is not one of idp's is ``CursorError``."""
    statement = select(AuditEvent).where(AuditEvent.subject_id == user.id)
    return keyset_page(db, statement, AuditEvent.id, cursor=cursor, limit=ACTIVITY_PAGE_SIZE,
                       descending=True)  # fmt: skip


def shows_origin(event: AuditEvent, user_id: str) -> bool:
    """Whether the activity page shows the address and browser ``event`` came from: when the
    user acted, or nobody signed in did (a sign-in, a wrong password: who tried is what the page
    is for). An action someone else took on the account (an administrator in the console, an API
    token, the command line: the event's actor) came from that person's address and browser,
    which are their personal data, not the user's (OWASP ASVS 4.0 8.3.1, 8.3.4): the page says
    that it happened and when, not where from."""
    return event.actor_id is None or event.actor_id == user_id
