"""Groups, who belongs to them, and what they mean to each client (docs/admins.md, "Groups").

One service for the admin console and the ``idp groups`` commands: every rule about groups,
memberships, a client's allowed groups and its claim maps lives here, and every change is audited
with who made it. Access follows membership: whenever a user may no longer use a client (they left
its last allowed group, the group was deleted, or the client's allowed groups changed), their
grants to it are revoked in the same transaction, so refresh tokens fail with ``invalid_grant`` and
access tokens fail at userinfo and introspection on every node at once (the grant lives in the
shared database; idp.services.grants).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from idp.clock import SYSTEM_CLOCK, Clock
from idp.models import ClaimMap, Client, ClientAllowedGroup, Group, GroupMember, User
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.client_access import kept_beyond
from idp.services.clients import claim_version
from idp.services.email_addresses import normalise_email
from idp.services.group_access import lock_access_changes, revoke_grants_without_access
from idp.services.group_fields import (
    MAX_CLAIM_VALUE,
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    ClaimMapEntry,
    GroupError,
    check_member_count,
    shown,
    text_field,
    unknown_users,
    validate_claim_name,
    validate_name,
)
from idp.services.pages import CONSOLE_PAGE, Page, keyset_page


class GroupNameTakenError(GroupError):
    """Another group has the name (a conflict with the current state, not a malformed name)."""


class GroupInUseError(GroupError):
    """Deleting the group would leave clients with no allowed group: named, so that the admin
    can confirm explicitly (those clients then admit no one) or change them first."""

    def __init__(self, group: str, clients: Sequence[Client]) -> None:
        self.clients = list(clients)
        names = ", ".join(f"{c.name} ({c.client_id})" for c in self.clients)
        super().__init__(
            f"{group} is the only allowed group of {names}: after deleting it no one could sign "
            "in there. Confirm the deletion, or change those clients' allowed groups first."
        )


@dataclass(frozen=True)
class Actor:
    """Who changes groups, for the audit log: an admin's user id, or ``cli``."""

    user_id: str | None = audit.CLI_ACTOR
    via: str = "cli"
    context: RequestContext = field(default_factory=RequestContext)


class GroupService:
    def __init__(
        self, db: Session, actor: Actor | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.db = db
        self.actor = actor or Actor()
        #: The time of a change made without an explicit ``now``.
        self.clock = clock

    def _audit(self, kind: str, *, subject_id: str | None = None, client_id: str | None = None,
               **details: Any) -> None:  # fmt: skip
        audit.record(
            self.db,
            kind,
            actor_id=self.actor.user_id,
            subject_id=subject_id,
            client_id=client_id,
            context=self.actor.context,
            via=self.actor.via,
            **details,
        )

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str) -> Group | None:
        if not name or len(name) > 64:
            return None
        return self.db.scalar(select(Group).where(Group.name == name.strip()))

    def require(self, name: str) -> Group:
        group = self.get(name)
        if group is None:
            raise GroupError(f"no group {shown(name)}")
        return group

    def list_with_counts(self) -> list[tuple[Group, int]]:
        """Every group with its member count, in one query, by name."""
        count = (
            select(func.count())
            .select_from(GroupMember)
            .where(GroupMember.group_id == Group.id)
            .scalar_subquery()
        )
        return [(g, int(n)) for g, n in self.db.execute(select(Group, count).order_by(Group.name))]

    def page_with_counts(
        self, cursor: str | None, limit: int = CONSOLE_PAGE
    ) -> Page[tuple[Group, int]]:
        """A page of the groups by name (keyset, idp.services.pages), each with its member
        count: two statements whatever the page."""
        page = keyset_page(self.db, select(Group), Group.name, cursor=cursor, limit=limit)
        ids = [group.id for group in page.items]
        counted = select(GroupMember.group_id, func.count()).where(GroupMember.group_id.in_(ids))
        found = self.db.execute(counted.group_by(GroupMember.group_id))
        counts: dict[str, int] = {row[0]: row[1] for row in found}
        rows = [(group, int(counts.get(group.id, 0))) for group in page.items]
        return Page(rows, page.next_cursor, page.previous_cursor)

    def members_page(
        self, group: Group, cursor: str | None, limit: int = CONSOLE_PAGE
    ) -> Page[User]:
        """A page of the group's members by email (keyset, idp.services.pages)."""
        statement = (
            select(User)
            .join(GroupMember, GroupMember.user_id == User.id)
            .where(GroupMember.group_id == group.id)
        )
        return keyset_page(self.db, statement, User.email, cursor=cursor, limit=limit)

    def member_count(self, group: Group) -> int:
        """How many members the group has, counted by the database: no member row is read."""
        counted = select(func.count()).select_from(GroupMember)
        return int(self.db.scalar(counted.where(GroupMember.group_id == group.id)) or 0)

    def members(self, group: Group) -> list[User]:
        return list(
            self.db.scalars(
                select(User)
                .join(GroupMember, GroupMember.user_id == User.id)
                .where(GroupMember.group_id == group.id)
                .order_by(User.email)
            )
        )

    def groups_of(self, user_id: str) -> list[Group]:
        return list(
            self.db.scalars(
                select(Group)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.user_id == user_id)
                .order_by(Group.name)
            )
        )

    def allowed_groups(self, client_id: str) -> list[Group]:
        return list(
            self.db.scalars(
                select(Group)
                .join(ClientAllowedGroup, ClientAllowedGroup.group_id == Group.id)
                .where(ClientAllowedGroup.client_id == client_id)
                .order_by(Group.name)
            )
        )

    def claim_maps(self, client_id: str) -> list[ClaimMapEntry]:
        rows = self.db.execute(
            select(ClaimMap.claim, Group.name, ClaimMap.value)
            .join(Group, Group.id == ClaimMap.group_id)
            .where(ClaimMap.client_id == client_id)
            .order_by(ClaimMap.claim, Group.name, ClaimMap.value)
        )
        return [ClaimMapEntry(claim=c, group=g, value=v) for c, g, v in rows]

    def clients_of(self, group: Group, *also: ColumnElement[bool]) -> list[Client]:
        """The clients that name the group as an allowed group (and meet ``also``), by name."""
        return list(
            self.db.scalars(
                select(Client)
                .join(ClientAllowedGroup, ClientAllowedGroup.client_id == Client.client_id)
                .where(ClientAllowedGroup.group_id == group.id, *also)
                .order_by(Client.name)
            )
        )

    def sole_allowed_at(self, group: Group) -> list[Client]:
        """The clients whose only allowed group is ``group``: one statement (each client's allowed
        groups counted by the database), however many clients name the group."""
        each = aliased(ClientAllowedGroup)  # the client's rows, beside the one naming the group
        allowed = select(func.count()).select_from(each).where(
            each.client_id == Client.client_id).correlate(Client).scalar_subquery()  # fmt: skip
        return self.clients_of(group, allowed == 1)

    def find_users(self, emails: Sequence[str]) -> list[User]:
        """The users with these addresses, in order; an unknown one refuses them all (naming
        every unknown address), so that ``add``/``remove`` change nothing on a typo."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails if e.strip()))
        if not wanted:
            raise GroupError("name at least one user by email address")
        check_member_count(wanted)
        found = {u.email: u for u in self.db.scalars(select(User).where(User.email.in_(wanted)))}
        unknown = [e for e in wanted if e not in found]
        if unknown:
            raise unknown_users(unknown)
        return [found[e] for e in wanted]

    # -- groups ----------------------------------------------------------------------------------
    def create(self, name: str, display_name: str = "", description: str = "") -> Group:
        name = validate_name(name)
        group = Group(
            name=name,
            display_name=text_field(display_name, MAX_DISPLAY_NAME, "display name") or name,
            description=text_field(description, MAX_DESCRIPTION, "description"),
            created_at=self.clock.now(),
        )
        try:
            with self.db.begin_nested():
                self.db.add(group)
        except IntegrityError:
            raise GroupNameTakenError(f"a group named {name!r} already exists") from None
        self._audit("group.created", group=name)
        return group

    def rename(self, group: Group, new_name: str) -> None:
        old = group.name
        new_name = validate_name(new_name)
        if new_name == old:
            return
        if self.get(new_name) is not None:
            raise GroupNameTakenError(f"a group named {new_name!r} already exists")
        try:
            with self.db.begin_nested():
                group.name = new_name
        except IntegrityError:
            raise GroupNameTakenError(f"a group named {new_name!r} already exists") from None
        self._audit("group.renamed", group=new_name, previous_name=old)

    def edit(self, group: Group, *, display_name: str, description: str) -> None:
        new = {
            "display_name": text_field(display_name, MAX_DISPLAY_NAME, "display name")
            or group.name,
            "description": text_field(description, MAX_DESCRIPTION, "description"),
        }
        # OWASP ASVS 4.0 7.1.3: what changed, old and new; an edit that changes nothing is no
        # event (the console and the API send both texts whichever one was edited).
        changes = {name: {"old": getattr(group, name), "new": value}
                   for name, value in new.items() if getattr(group, name) != value}  # fmt: skip
        if not changes:
            return
        group.display_name, group.description = new["display_name"], new["description"]
        self._audit("group.updated", group=group.name, changes=changes)

    def delete(self, group: Group, *, confirmed: bool = False, now: datetime | None = None) -> int:
        """Delete a group. Refused (``GroupInUseError``) when it is some client's only allowed
        group unless ``confirmed``: such a client then admits no one (never everyone). Returns
        how many grants lost their access."""
        lock_access_changes(self.db)  # before anything is read: the changes one at a time
        sole = self.sole_allowed_at(group)
        if sole and not confirmed:
            raise GroupInUseError(group.name, sole)
        now = now or self.clock.now()
        member_ids = list(
            self.db.scalars(select(GroupMember.user_id).where(GroupMember.group_id == group.id))
        )
        client_ids = [c.client_id for c in self.clients_of(group)]
        name = group.name
        # What each client that names the group loses, audited for that client as any change of
        # its access or claim maps is (docs/admins.md).
        access_before = {c: [g.name for g in self.allowed_groups(c)] for c in client_ids}
        mapping = self.db.scalars(select(ClaimMap.client_id).where(ClaimMap.group_id == group.id))
        maps_before = {c: [str(e) for e in self.claim_maps(c)] for c in set(mapping)}
        for client_id in sorted(set(access_before) | set(maps_before)):
            claim_version(self.db, self.db.get_one(Client, client_id))  # before the rows change
        self.db.execute(delete(ClaimMap).where(ClaimMap.group_id == group.id))
        self.db.execute(delete(ClientAllowedGroup).where(ClientAllowedGroup.group_id == group.id))
        self.db.execute(delete(GroupMember).where(GroupMember.group_id == group.id))
        self.db.delete(group)
        self.db.flush()
        revoked = 0
        if client_ids and member_ids:
            revoked = revoke_grants_without_access(
                self.db, now, client_ids=client_ids, user_ids=member_ids
            )
        self._audit(
            "group.deleted",
            group=name,
            members=len(member_ids),
            clients_left_without_groups=[c.client_id for c in sole],
            revoked_grants=revoked,
        )
        for client_id, before in access_before.items():
            after = [n for n in before if n != name]
            self._audit("client.access_changed", client_id=client_id, allowed_groups=after or None,
                        previous=before, group_deleted=name)  # fmt: skip
        for client_id, before in sorted(maps_before.items()):
            after = [str(e) for e in self.claim_maps(client_id)]
            self._audit("client.claim_maps_changed", client_id=client_id, claim_maps=after,
                        previous=before, group_deleted=name)  # fmt: skip
        return revoked

    # -- memberships -----------------------------------------------------------------------------
    def add_members(self, group: Group, users: Sequence[User]) -> list[User]:
        """Add users; returns those who were not members yet (adding twice is harmless, and of
        two concurrent adds exactly one inserts the row and is audited)."""
        added: list[User] = []
        for user in users:
            try:
                with self.db.begin_nested():
                    self.db.execute(
                        insert(GroupMember).values(
                            group_id=group.id, user_id=user.id, added_at=self.clock.now()
                        )
                    )
            except IntegrityError:
                continue
            added.append(user)
            self._audit("group.member_added", subject_id=user.id, group=group.name)
        return added

    def remove_members(
        self, group: Group, users: Sequence[User], *, now: datetime | None = None
    ) -> list[User]:
        """Remove users; returns those who were members. Their grants to clients they may no
        longer use are revoked now (access follows membership)."""
        now = now or self.clock.now()
        lock_access_changes(self.db)  # whether another allowed group remains: one at a time
        removed: list[User] = []
        for user in users:
            result = self.db.execute(
                delete(GroupMember)
                .where(GroupMember.group_id == group.id, GroupMember.user_id == user.id)
                .execution_options(synchronize_session=False)
            )
            if not getattr(result, "rowcount", 0):
                continue
            removed.append(user)
            revoked = revoke_grants_without_access(self.db, now, user_ids=[user.id])
            self._audit(
                "group.member_removed",
                subject_id=user.id,
                group=group.name,
                revoked_grants=revoked,
            )
        return removed

    # -- clients ---------------------------------------------------------------------------------
    def set_allowed_groups(
        self, client: Client, names: Sequence[str] | None, *, now: datetime | None = None
    ) -> int:
        """``None`` (or empty): everyone may use the client. Otherwise only members of the named
        groups; the grants of users outside them are revoked now. Returns how many."""
        lock_access_changes(self.db)  # before anything is read: the changes one at a time
        groups = [self.require(n) for n in dict.fromkeys(n.strip() for n in names or ())]
        before = [g.name for g in self.allowed_groups(client.client_id)]
        after = sorted(g.name for g in groups)
        if before == after and client.restricted_to_groups == bool(groups):
            return 0
        claim_version(self.db, client)  # what the access page's version reflects
        self.db.execute(
            delete(ClientAllowedGroup).where(ClientAllowedGroup.client_id == client.client_id)
        )
        for group in groups:
            self.db.add(ClientAllowedGroup(client_id=client.client_id, group_id=group.id))
        client.restricted_to_groups = bool(groups)
        self.db.flush()
        revoked = revoke_grants_without_access(
            self.db, now or self.clock.now(), client_ids=[client.client_id]
        )
        self._audit(
            "client.access_changed",
            client_id=client.client_id,
            allowed_groups=after or None,
            previous=before or None,
            revoked_grants=revoked,
        )
        return revoked

    def set_claim_maps(self, client: Client, entries: Sequence[ClaimMapEntry]) -> None:
        """Replace the client's claim maps. A reserved claim name or an unknown group refuses
        the whole set; the set stored already changes nothing."""
        rows: dict[tuple[str, str, str], Group] = {}
        for entry in entries:
            claim = validate_claim_name(entry.claim)
            group = self.require(entry.group)
            value = text_field(entry.value, MAX_CLAIM_VALUE, "claim value")
            if not value:
                raise GroupError(f"the claim map {entry} has no value")
            rows[(claim, group.name, value)] = group
        before = self.claim_maps(client.client_id)
        if {(e.claim, e.group, e.value) for e in before} == set(rows):
            return
        claim_version(self.db, client)
        self.db.execute(delete(ClaimMap).where(ClaimMap.client_id == client.client_id))
        for (claim, _, value), group in rows.items():
            self.db.add(
                ClaimMap(client_id=client.client_id, claim=claim, group_id=group.id, value=value)
            )
        self.db.flush()
        self._audit("client.claim_maps_changed", client_id=client.client_id,
                    claim_maps=[str(e) for e in self.claim_maps(client.client_id)],
                    previous=[str(e) for e in before])  # fmt: skip

    def set_access(self, client: Client, names: Sequence[str], entries: Sequence[ClaimMapEntry],
                   *, expected_version: int, shown: Sequence[str] | None = None,
                   ) -> int:  # fmt: skip
        """The console's access page saves both as it showed them: only onto the version of the
        client it was read from (RFC 9110 13.1.1), else ``StaleClientError`` before anything
        changes, so a page opened before another admin took a group away never puts it back
        unseen. ``shown``: the allowed groups of the page (a page of them), the others kept
        (idp.services.client_access). Returns how many grants lost their access."""
        claim_version(self.db, client, expected_version)
        if shown is not None:
            now = [group.name for group in self.allowed_groups(client.client_id)]
            if not (names := kept_beyond(now, shown, names)):
                raise GroupError("choose at least one group, or let everyone sign in")
        revoked = self.set_allowed_groups(client, names)
        self.set_claim_maps(client, entries)
        return revoked


def describe_group(group: Group, members: Sequence[User] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": group.name,
        "display_name": group.display_name,
        "description": group.description,
        "created_at": group.created_at.isoformat() if group.created_at else None,
    }
    if members is not None:
        data["members"] = [u.email for u in members]
    return data
