"""The scene the property-based tests of the signed-in surfaces fuzz on: the portal (idp/account/)
and the admin console (idp/admin/). One app on a real SQLite database (the fuzz app of
``fuzz_rig``: forms without their CSRF token reach the views, except where a test turns the check
back on), an acting user, and another user, the victim, whose passkey, sessions, grant, login link
and group membership no request of the acting user may change (its rows are read before and
after, ``victim_rows``).

Sessions are made directly (``fuzz_rig.session_cookie``): a passkey sign-in with user
verification, now, which is the portal's step-up (``idp.services.portal.step_up_satisfied``) and
the console's passkey sign-in of the last ten minutes (``idp.services.admin_access``). A fresh one
per request, since a fuzzed request may end it (a revoked session, every session signed out).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select

from idp.extensions import db
from idp.models import (
    BackupCode,
    BrowserSession,
    Consent,
    EmailChangeRequest,
    Grant,
    Group,
    GroupMember,
    LoginLink,
    Passkey,
    RefreshToken,
    TotpCredential,
    User,
)
from idp.services.groups import GroupService
from idp.services.login_links import LINK_ID_LENGTH, LOGIN
from tests.conftest import throwaway_postgres_database
from tests.support.factories import CreatedUser
from tests.support.fuzz_rig import Rig, fuzz_app, session_cookie
from tests.support.fuzzing import rows_of
from tests.support.passkey_flow import csrf_meta

#: The victim's group (no request names it) and the group the console's requests act on.
VICTIMS_GROUP = "victims"
FUZZ_GROUP = "fuzzers"


@contextmanager
def scene_on(database: str, directory: Path) -> Iterator[Scene]:
    """The scene on a new SQLite database in ``directory`` or on a throw-away PostgreSQL one."""
    if database == "sqlite":
        yield Scene.build(fuzz_app(directory))
        return
    with throwaway_postgres_database() as url:
        app = fuzz_app(directory, url)
        try:
            built = Scene.build(app)
            built.database = database
            yield built
        finally:
            with app.app_context():
                db.engine.dispose()


def add_passkey(app: Flask, user_id: str, credential_id: str, *, flagged: bool = False) -> None:
    """A passkey row of ``user_id`` (no sign-in uses it: the sessions are made directly)."""
    with app.app_context():
        db.session.add(Passkey(
            credential_id=credential_id, user_id=user_id, public_key=b"k", sign_count=0,
            name=f"Key {credential_id}",
            flagged_at=datetime.now(UTC) if flagged else None,
            flagged_reason="counter" if flagged else None,
        ))  # fmt: skip
        db.session.commit()


def passkey_ids(app: Flask, user_id: str) -> list[str]:
    with app.app_context():
        found = db.session.scalars(
            select(Passkey.credential_id)
            .where(Passkey.user_id == user_id)
            .order_by(Passkey.credential_id)
        )
        ids = list(found)
        db.session.remove()
        return ids


def session_ids(app: Flask, user_id: str) -> list[str]:
    with app.app_context():
        found = db.session.scalars(
            select(BrowserSession.sid).where(
                BrowserSession.user_id == user_id, BrowserSession.revoked_at.is_(None)
            )
        )
        sids = list(found)
        db.session.remove()
        return sids


@dataclass
class Scene:
    """The app, its clients (``rig``), and the victim, ``rig.user``, with everything of theirs a
    forged id could name."""

    rig: Rig
    victim_passkey: str
    victim_sid: str
    victim_client: str
    victim_link: str
    #: The victim's rows as they were set up.
    victim_before: list[list[tuple[object, ...]]] = field(default_factory=list)
    #: "sqlite" or "postgresql".
    database: str = "sqlite"

    @property
    def app(self) -> Flask:
        return self.rig.app

    @property
    def victim(self) -> CreatedUser:
        return self.rig.user

    @classmethod
    def build(cls, app: Flask) -> Scene:
        rig = Rig.build(app)
        victim = rig.user
        add_passkey(app, victim.id, "victim-passkey")
        # A grant with a live refresh token, from a real code flow, and a second session.
        rig.tokens("client_secret_basic")
        session_cookie(app, victim.id)
        rig.link(LOGIN)
        with app.app_context():
            groups = GroupService(db.session())
            for name in (VICTIMS_GROUP, FUZZ_GROUP):
                groups.create(name, name.title(), "")
            db.session.commit()
            groups.add_members(groups.get(VICTIMS_GROUP), groups.find_users([victim.email]))
            link = db.session.scalars(select(LoginLink).where(LoginLink.user_id == victim.id))
            link_id = next(iter(link)).id_hash[:LINK_ID_LENGTH]
            db.session.commit()
            db.session.remove()
        scene = cls(
            rig,
            victim_passkey="victim-passkey",
            victim_sid=session_ids(app, victim.id)[0],
            victim_client=rig.clients["client_secret_basic"].client_id,
            victim_link=link_id,
        )
        scene.victim_before = scene.victim_rows()
        return scene

    def victim_rows(self) -> list[list[tuple[object, ...]]]:
        """Every row of the victim a forged id could reach, every column of them."""
        return owned_rows(self.app, self.victim.id, groups=(VICTIMS_GROUP,))

    def cookie(self, user_id: str) -> str:
        """A fresh stepped-up passkey session of ``user_id``."""
        return session_cookie(self.app, user_id)

    def csrf_browser(self, user_id: str) -> tuple[FlaskClient, str]:
        """A browser with a cookie jar, signed in as ``user_id``, and the CSRF token its pages
        carry (bound to this browser's CSRF cookie)."""
        browser = self.app.test_client()
        name, value = self.cookie(user_id).split("=", 1)
        browser.set_cookie(name, value)
        page = browser.get("/account")
        return browser, csrf_meta(page.text)


def drop_passkeys(app: Flask, user_id: str) -> None:
    with app.app_context():
        db.session.execute(delete(Passkey).where(Passkey.user_id == user_id))
        db.session.commit()


def owned_rows(
    app: Flask, user_id: str, groups: tuple[str, ...] = ()
) -> list[list[tuple[object, ...]]]:
    """``user_id``'s account, sign-in methods, sessions (whether each stands: its last use moves
    on every request), grants and their refresh tokens, consents, links, pending email change,
    and memberships of ``groups``."""
    grants = select(Grant.id).where(Grant.user_id == user_id)
    in_groups = select(Group.id).where(Group.name.in_(groups))
    return rows_of(
        app,
        select(User.__table__).where(User.id == user_id),
        select(Passkey.__table__).where(Passkey.user_id == user_id),
        select(BrowserSession.sid, BrowserSession.revoked_at)
        .where(BrowserSession.user_id == user_id)
        .order_by(BrowserSession.sid),
        select(Grant.__table__).where(Grant.user_id == user_id).order_by(Grant.id),
        select(RefreshToken.__table__).where(RefreshToken.grant_id.in_(grants)),
        select(Consent.__table__).where(Consent.user_id == user_id),
        select(LoginLink.__table__).where(LoginLink.user_id == user_id),
        select(TotpCredential.__table__).where(TotpCredential.user_id == user_id),
        select(BackupCode.__table__).where(BackupCode.user_id == user_id),
        select(EmailChangeRequest.__table__).where(EmailChangeRequest.user_id == user_id),
        select(GroupMember.__table__).where(
            GroupMember.user_id == user_id, GroupMember.group_id.in_(in_groups)
        ),
    )
