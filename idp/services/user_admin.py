"""What admins decide about users: create, invite, disable, enable, delete, promote, demote, and
take back sign-in methods, sessions and consents, on the users they find and read through
``idp.services.user_directory``. No Flask: the console, the admin API and the ``idp users``
commands share this service.

Every action is audited with the admin as actor and the user as subject (docs/architecture.md,
"Invariants"). The last active admin can be neither disabled, demoted nor deleted: that check and
the change happen in one transaction that holds the active admins' rows (PostgreSQL ``SELECT ...
FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` write lock), so two admins removing each other at the
same moment cannot both succeed; the API tokens an admin created end with their authority.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.orm import Session

from idp import checkpoints
from idp.errors import DomainError
from idp.models import AccessToken, ApiToken, BrowserSession, LoginLink, Passkey, User
from idp.services import account_access, audit, portal
from idp.services.account_access import MADE_WHILE_DISABLED
from idp.services.api_tokens import ACTOR_PREFIX, NO_LONGER, issuing_until
from idp.services.audit import RequestContext
from idp.services.backup_codes import BackupCodeService
from idp.services.display_names import display_name
from idp.services.login_links import (
    INVITE,
    LOGIN,
    MAILED_INVITE,
    LoginLinkService,
    end_links_issued_by,
    link_id,
)
from idp.services.method_removal import CONSOLE_CHECKPOINT, remove_passkey
from idp.services.notifications import Notifier
from idp.services.passkey_names import in_notice
from idp.services.passwords import PasswordService
from idp.services.sessions import end_sessions
from idp.services.token_creators import creator_id_of, creator_refusal, revoke_created_by
from idp.services.totp import TotpService
from idp.services.user_directory import UserDirectory
from idp.services.user_locks import lock_in_admin_order
from idp.services.users import UserService

#: Where a link's issue is about to hold its issuer's and user's rows (tests hold it here).
HOLD_CHECKPOINT = "user_admin.issuing_link"
#: One-time links an admin hands out: 15 minutes by default (settings), never beyond a day.
MIN_LINK_TTL = 60
MAX_LINK_TTL = 24 * 3600


class UserAdminError(DomainError):
    """The action cannot be done as asked; the message says why, in words for the admin."""


class UserConflictError(UserAdminError):
    """The change conflicts with another account (its email address is taken)."""


class LastAdminError(UserAdminError):
    """The action would leave the deployment without an active admin."""


@dataclass(frozen=True)
class IssuedLink:
    """A freshly issued login link or invite: the URL is shown to the admin once, here only;
    None for an invite only mailed (``MAILED_INVITE``: its URL goes to the address alone)."""

    link: LoginLink
    url: str | None

    @property
    def id(self) -> str:
        return link_id(self.link)


def check_link_ttl(ttl: int) -> int:
    if not MIN_LINK_TTL <= ttl <= MAX_LINK_TTL:
        raise UserAdminError("A link must be valid between 1 minute and 24 hours.")
    return ttl


class UserAdmin(UserDirectory):
    """The admin's powers over users. ``actor_id`` is the admin (or ``"cli"``) doing it; what
    the admin finds and reads first is ``UserDirectory``'s."""

    def __init__(
        self,
        db: Session,
        *,
        passwords: PasswordService,
        notifier: Notifier,
        backup_codes: BackupCodeService,
        totp: TotpService,
        actor_id: str,
        via: str | None = None,
        context: RequestContext | None = None,
        allow_local_domains: bool = False,
    ) -> None:
        """``allow_local_domains``: development addresses (idp.services.email_addresses)."""
        super().__init__(db, passwords=passwords)
        self.allow_local_domains = allow_local_domains
        self.notifier = notifier
        self.backup_codes = backup_codes
        self.totp = totp
        self.actor_id = actor_id
        self.via = via
        self.context = context or RequestContext()

    def _audit(self, kind: str, user: User, **details: Any) -> None:
        audit.record(self.db, kind, actor_id=self.actor_id, subject_id=user.id,
                     context=self.context, via=self.via, **details)  # fmt: skip

    def record_refusal(self, action: str, user: User, error: UserAdminError) -> None:
        """A refused action is audited too (after the caller rolled the attempt back): "who
        tried to remove the last admin" is an answer the audit log must give."""
        audit.record(
            self.db, "admin.action_refused", outcome="failure", actor_id=self.actor_id,
            subject_id=user.id, context=self.context, via=self.via, action=action,
            reason="last_admin" if isinstance(error, LastAdminError) else "refused",
            message=str(error),
        )  # fmt: skip

    # -- creating ---------------------------------------------------------------------------------
    def create(
        self, email: str, *, name: str = "", admin: bool = False, password: str | None = None
    ) -> User:
        from idp.services.passwords import PasswordPolicyError
        from idp.services.users import UserError, UserExistsError

        try:
            user = UserService(self.db, self.passwords).create(
                email, name=display_name(name, 200), password=password, admin=admin,
                allow_local_domains=self.allow_local_domains,
            )  # fmt: skip
        except UserExistsError as error:
            raise UserConflictError(str(error)) from error
        except (UserError, PasswordPolicyError) as error:
            raise UserAdminError(str(error)) from error
        self.db.flush()
        self._audit("admin.user_created", user, admin=admin, password=password is not None)
        return user

    def invite(
        self,
        email: str,
        *,
        name: str = "",
        admin: bool = False,
        ttl: int,
        now: datetime,
        url_for_secret: Any,
        inviter: str,
        mailed_only: bool = False,
    ) -> tuple[User, IssuedLink]:
        """A new account with no way in yet, and a one-time invite to it: the invitee sets a
        name, registers a passkey and is signed in (``idp.signup``). ``url_for_secret`` turns the
        secret into the link's URL. ``mailed_only``: the URL goes to the address alone, never
        to the caller, and accepting it marks the address verified (``_mail_invite``)."""
        check_link_ttl(ttl)
        user = self.create(email, name=name, admin=admin)
        return user, self._mail_invite(user, ttl, now, url_for_secret, inviter, mailed_only)

    def reinvite(
        self,
        user: User,
        *,
        ttl: int,
        now: datetime,
        url_for_secret: Any,
        inviter: str,
        mailed_only: bool = False,
    ) -> IssuedLink:
        """A fresh invite for an account that has not been set up; older invites stop working."""
        check_link_ttl(ttl)
        if self.has_way_in(user):
            raise UserAdminError("This account is already set up: send a login link instead.")
        self._require_active(user)
        return self._mail_invite(user, ttl, now, url_for_secret, inviter, mailed_only, INVITE)

    def _mail_invite(
        self,
        user: User,
        ttl: int,
        now: datetime,
        url_for_secret: Any,
        inviter: str,
        mailed_only: bool,
        supersedes: str | None = None,
    ) -> IssuedLink:
        # An invite whose URL the caller is handed proves nothing about the mailbox (OIDC Core
        # 5.1 email_verified): only one that idp's mail alone delivered marks the address
        # verified when accepted (docs/security.md).
        issued = self._issue(user, MAILED_INVITE if mailed_only else INVITE, ttl, now,
                             url_for_secret, supersedes)  # fmt: skip
        self.notifier.notify(
            user, "invite", link=issued.url, inviter=inviter,
            expires_at=issued.link.expires_at,
        )  # fmt: skip
        return IssuedLink(link=issued.link, url=None) if mailed_only else issued

    def send_login_link(
        self, user: User, *, ttl: int, now: datetime, url_for_secret: Any
    ) -> IssuedLink:
        """A one-time rescue link (login links): emailed (or kept in the outbox) to the
        user, and returned so that the admin can pass it on by another channel."""
        check_link_ttl(ttl)
        self._require_active(user)
        issued = self._issue(user, LOGIN, ttl, now, url_for_secret, LOGIN)
        self.notifier.notify(
            user, "login_link", link=issued.url,
            expires_at=issued.link.expires_at,
        )  # fmt: skip
        return issued

    def _issue(
        self, user: User, purpose: str, ttl: int, now: datetime, url_for_secret: Any,
        supersedes: str | None = None,
    ) -> IssuedLink:  # fmt: skip
        checkpoints.reached(HOLD_CHECKPOINT)
        ttl = self._hold_issuer_and_user(user, ttl, now)
        # Read anew under the user's lock: a disable committed before it is seen here; one after
        # waits for the link and ends it with the user's others (``disable``). Checked on the row
        # read earlier, a link inserted as the disable ended the links it could see (READ
        # COMMITTED) outlived it.
        self._require_active(user)
        if supersedes is not None:
            # A new link stands in for the older ones of its kind (one lost, expired in a mailbox,
            # passed on in the wrong chat): they end, so that one rescue link (or invite) at a time
            # is a bearer secret to the account (OWASP Forgot Password Cheat Sheet: a token is
            # invalidated once a new one is made), and so does the restricted session an older
            # one already opened, whose holder may still add a passkey (OWASP ASVS 4.0 3.3.1).
            # Ended after the locks, in the order of every transaction that ends an issuer's links.
            superseded = LoginLinkService(self.db).revoke_all(user, now, purpose=supersedes)
            opened = account_access.end_link_sessions(self.db, user, now, "link_superseded")
            if (superseded or opened) and supersedes == LOGIN:
                self._audit("login_link.revoked", user, reason="superseded", links=superseded,
                            sessions_ended=opened)  # fmt: skip
        link, secret = LoginLinkService(self.db).issue(
            user, ttl=ttl, now=now, created_by=self.actor_id, purpose=purpose,
            context=self.context, via=self.via,
        )  # fmt: skip
        return IssuedLink(link=link, url=url_for_secret(purpose, secret))

    def _hold_issuer_and_user(self, user: User, ttl: int, now: datetime) -> int:
        """Hold the issuer's row and the user's (``lock_in_admin_order``, the order of ``disable``)
        to the commit; the TTL. A link ends with its issuer's authority (``_end_issued``) and its
        user's disable: one committed first is seen here, one after waits and ends the link."""
        issuer = creator_id_of(self.actor_id)
        if issuer is None or not issuer.startswith(ACTOR_PREFIX):
            held = lock_in_admin_order(self.db, {user.id} | ({issuer} if issuer else set()))
            if issuer is not None and creator_refusal(issuer, held.get(issuer)):
                raise UserAdminError("Only an active admin issues links.")
        else:  # the user's row first, as the API's view holds it (idp.api.users), then the token's
            held = lock_in_admin_order(self.db, {user.id})
            until = issuing_until(self.db, issuer, now)
            if until == NO_LONGER:
                raise UserAdminError("This API token no longer works.")
            if isinstance(until, datetime):
                # Nor does it outlive the token's expiry, the end of the authority it was minted
                # from, as it ends with the token's revocation (OWASP ASVS 4.0 4.1.3): a token
                # in its last hour handed out links that worked for another day.
                ttl = min(ttl, int((until - now).total_seconds()))
        if user.id not in held:
            raise UserAdminError("This user was deleted.")
        return ttl

    def revoke_link(self, user: User, public_id: str, now: datetime) -> None:
        if not LoginLinkService(self.db).revoke(user, public_id[:64], now):
            raise UserAdminError("That link was already used, revoked or never existed.")
        self._audit("admin.login_link_revoked", user, link_id=public_id[:64])

    # -- taking back sign-in methods, sessions, consents --------------------------------------
    def revoke_passkey(self, user: User, credential_id: str, now: datetime) -> int | None:
        """The portal's removal (``remove_passkey``: its sessions end with it), never refused, the
        last way in included (a lost device: the admin then sends a login link); None when
        another removal came first, which alone is announced and audited."""
        passkey = self.db.get(Passkey, credential_id[:1400])
        if passkey is None or passkey.user_id != user.id:
            raise UserAdminError("That passkey does not belong to this user.")
        checkpoints.reached(CONSOLE_CHECKPOINT)
        if (ended := remove_passkey(self.db, passkey, now)) is None:
            return None
        self.notifier.notify(user, "method_removed", method=in_notice(passkey.aaguid))
        self._audit("admin.passkey_revoked", user, credential_id=passkey.credential_id,
                    sessions_ended=ended)  # fmt: skip
        return ended

    def reset_totp(self, user: User) -> None:
        if self.totp.get(user) is None:
            raise UserAdminError("This user has no authenticator app.")
        self.totp.remove(user)
        self.notifier.notify(user, "method_removed", method="The authenticator app")
        self._audit("admin.totp_reset", user)

    def void_backup_codes(self, user: User) -> None:
        left = self.backup_codes.remaining(user)
        self.backup_codes.void(user)
        self._audit("admin.backup_codes_voided", user, remaining=left)

    def revoke_session(self, user: User, sid: str, now: datetime) -> None:
        if not portal.revoke_session(self.db, user, sid[:64], now):
            raise UserAdminError("That session has already ended.")
        self._audit("admin.session_revoked", user, sid=sid[:64])

    def revoke_sessions(self, user: User, now: datetime) -> int:
        count = self._end_sessions(user, now)
        self._audit("admin.sessions_revoked", user, count=count)
        return count

    def revoke_consent(self, user: User, client_id: str, now: datetime) -> None:
        disconnected = portal.disconnect_app(self.db, user, client_id[:64], now)
        if not disconnected:
            raise UserAdminError("This user has not connected that app.")
        self._audit("admin.consent_revoked", user, client_id=client_id[:64],
                    consent=disconnected.consent_removed,
                    grants=disconnected.grants_revoked)  # fmt: skip

    # -- disable, enable, delete, promote, demote ------------------------------------------------
    def disable(self, user: User, now: datetime) -> None:
        """Disable at once: sessions end, every grant (refresh and access tokens) and every
        unspent link is revoked. Token, userinfo and introspection checks also refuse a disabled
        user's tokens on their own (``GrantService``), whatever was revoked here."""
        if user.disabled_at is not None:
            raise UserAdminError("This user is already disabled.")
        self._keep_an_admin(user, was_active_admin=user.is_admin)
        user.disabled_at = now
        self._end_sessions(user, now, "user_disabled")
        self._revoke_tokens(user, now, "user_disabled")
        LoginLinkService(self.db).revoke_all(user, now)
        revoke_created_by(self.db, user, now, "creator_disabled", self._audit)
        self._audit("admin.user_disabled", user, issued_links_revoked=self._end_issued(user, now))

    def enable(self, user: User, now: datetime) -> None:
        """Enable: the account signs in again, with nothing of before. A session, grant or token
        still live now was made by a request racing the disable (idp.services.account_access):
        it ends here rather than come back to life."""
        if user.disabled_at is None:
            raise UserAdminError("This user is not disabled.")
        user.disabled_at = None
        ended = account_access.end_everything(self.db, user, now, MADE_WHILE_DISABLED)
        # So does a link still unspent: the disable ended every one and none is issued to a
        # disabled user (``_issue``), so it was issued before the disable by some path that
        # missed it, and would rescue the account from before (defence in depth).
        links = LoginLinkService(self.db).revoke_all(user, now)
        self._audit("admin.user_enabled", user, sessions_ended=ended, links_revoked=links)

    def rename(self, user: User, name: str) -> None:
        """The display name (the ``name`` claim); at most 200 characters, as at creation,
        without directional controls (UAX 9: the claim and the console read it as users' own)."""
        if len(name.strip()) > 200:
            raise UserAdminError("A name is at most 200 characters.")
        name = display_name(name, 200)
        if name != user.name:
            previous, user.name = user.name, name
            # OWASP ASVS 4.0 7.1.3: the name before and after (the ``name`` claim clients read).
            self._audit("admin.user_renamed", user, previous_name=previous, name=name)

    def promote(self, user: User, now: datetime) -> None:
        if user.is_admin:
            raise UserAdminError("This user is already an admin.")
        user.is_admin = True
        # A rescue link or an invite issued while the user was not an admin (by an API token that
        # may not rescue or make admins: docs/api.md) must not sign its holder in as the admin
        # they are now: both end here, and are issued anew by someone who may make admins.
        links = LoginLinkService(self.db)
        ended, invites = links.revoke_all(user, now, LOGIN), links.revoke_all(user, now, INVITE)
        # So do the restricted sessions such links already opened (OWASP ASVS 4.0 3.3.1): their
        # one way forward is adding a passkey, which would be a passkey of the admin's account.
        restricted = end_sessions(
            self.db, and_(BrowserSession.user_id == user.id, BrowserSession.restricted.is_(True)),
            "user_promoted", now,
        )  # fmt: skip
        self._audit("admin.user_promoted", user, login_links_revoked=ended, invites_revoked=invites,
                    restricted_sessions_ended=restricted)  # fmt: skip

    def demote(self, user: User, now: datetime) -> None:
        if not user.is_admin:
            raise UserAdminError("This user is not an admin.")
        self._keep_an_admin(user, was_active_admin=user.disabled_at is None)
        user.is_admin = False
        revoke_created_by(self.db, user, now, "creator_demoted", self._audit)
        self._audit("admin.user_demoted", user, issued_links_revoked=self._end_issued(user, now))

    def delete(self, user: User, now: datetime) -> None:
        """Delete the account and everything hanging off it; the audit log keeps its history."""
        self._keep_an_admin(user, was_active_admin=user.is_admin and user.disabled_at is None)
        # Its sessions go with the account: announced first (back-channel logout), while the
        # grants that say which clients to tell still exist.
        self._end_sessions(user, now, "user_deleted")
        self._revoke_tokens(user, now, "user_deleted")
        self.db.execute(delete(AccessToken).where(AccessToken.user_id == user.id))
        revoke_created_by(self.db, user, now, "creator_deleted", self._audit)
        self._audit("admin.user_deleted", user, email=user.email,
                    issued_links_revoked=self._end_issued(user, now))  # fmt: skip
        self.db.delete(user)

    def _end_issued(self, user: User, now: datetime) -> int:
        """The unspent links ``user`` issued, in the console or through an API token they
        created: they end with the admin's authority, as those tokens do (for good: enabled or
        promoted again, the admin issues new ones)."""
        tokens = self.db.scalars(select(ApiToken.name).where(ApiToken.created_by == user.id))
        return end_links_issued_by(
            self.db, [user.id, *(ACTOR_PREFIX + name for name in tokens)], now
        )

    def _locking_admins(self) -> None:
        """Hold the active admins' rows until the transaction ends (PostgreSQL row locks; SQLite
        already serialises writers with ``BEGIN IMMEDIATE``), so that the count below is still
        true when the change commits."""
        self.db.execute(
            select(User.id)
            .where(User.is_admin.is_(True), User.disabled_at.is_(None))
            .order_by(User.id)
            .with_for_update()
        ).all()

    def _keep_an_admin(self, user: User, *, was_active_admin: bool) -> None:
        """Refuse a change that leaves no active admin (only a change to an active admin can);
        the count runs after the change, inside its transaction."""
        if not was_active_admin:
            # A member's change holds no admin's row: it takes the member's alone, as the API's
            # ``users:write`` change (idp.api.users) and a link's issue (admins, then the member)
            # do, so that no two of them wait for each other in a cycle.
            return
        self._locking_admins()
        self.db.flush()
        remaining = self.db.scalar(
            select(func.count())
            .select_from(User)
            .where(User.is_admin.is_(True), User.disabled_at.is_(None), User.id != user.id)
        )
        if not remaining:
            raise LastAdminError("This is the last active admin. Make another user an admin first.")

    def _end_sessions(self, user: User, now: datetime, reason: str = "session_revoked") -> int:
        return account_access.end_user_sessions(self.db, user, now, reason)

    def _revoke_tokens(self, user: User, now: datetime, reason: str) -> None:
        account_access.revoke_user_tokens(self.db, user, now, reason)

    def _require_active(self, user: User) -> None:
        if user.disabled_at is not None:
            raise UserAdminError("This user is disabled. Enable the account first.")
