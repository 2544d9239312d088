"""Per-app access and the claims a user's groups release to a client (docs/admins.md): what a
sign-in and the token endpoint read of groups. idp.services.groups manages the groups."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, scoped_session

from idp.models import (
    ClaimMap,
    Client,
    ClientAllowedGroup,
    Grant,
    Group,
    GroupMember,
)
from idp.services import backchannel_logout


@dataclass(frozen=True)
class GroupClaims:
    """What a user's groups release to one client, read with one query."""

    groups: list[str]
    mapped: dict[str, list[str]]
    #: Whether one of the groups is among the client's allowed groups (what a restricted client
    #: admits: ``allowed_to_use``).
    in_allowed_group: bool = False

    def admits(self, client: Client) -> bool:
        return not client.restricted_to_groups or self.in_allowed_group


def allowed_to_use(db: Session, user_id: str, client: Client) -> bool:
    """Per-app access: a client with no allowed groups admits everyone; a restricted one only
    members of one of its allowed groups (none left: no one)."""
    if not client.restricted_to_groups:
        return True
    member = select(GroupMember.user_id).join(
        ClientAllowedGroup, ClientAllowedGroup.group_id == GroupMember.group_id
    )
    member = member.where(
        GroupMember.user_id == user_id, ClientAllowedGroup.client_id == client.client_id
    )
    return db.scalar(member.limit(1)) is not None


def group_claims(db: Session | scoped_session[Any], user_id: str, client_id: str) -> GroupClaims:
    """The user's group names, the client's mapped claims, and whether one of the groups is
    among the client's allowed ones, in one query (one row per membership and map; a group without
    a map yields one row with no claim). Stable order: group names, and each claim's values,
    sorted. The token endpoint reads access and claims from this one statement
    (idp.oidc.server)."""
    admits = exists().where(
        ClientAllowedGroup.client_id == client_id, ClientAllowedGroup.group_id == Group.id
    )
    rows = db.execute(
        select(Group.name, ClaimMap.claim, ClaimMap.value, admits.label("admits"))
        .join(GroupMember, GroupMember.group_id == Group.id)
        .outerjoin(ClaimMap, and_(ClaimMap.group_id == Group.id, ClaimMap.client_id == client_id))
        .where(GroupMember.user_id == user_id)
        .order_by(Group.name, ClaimMap.claim, ClaimMap.value)
    ).all()
    groups: list[str] = []
    mapped: dict[str, set[str]] = {}
    in_allowed_group = False
    for name, claim, value, admitted in rows:
        if not groups or groups[-1] != name:
            groups.append(name)
        if claim is not None:
            mapped.setdefault(claim, set()).add(value)
        in_allowed_group = in_allowed_group or bool(admitted)
    return GroupClaims(
        groups=groups,
        mapped={k: sorted(v) for k, v in sorted(mapped.items())},
        in_allowed_group=in_allowed_group,
    )


def released_claims(found: GroupClaims, scopes: Iterable[str]) -> dict[str, Any]:
    """``groups`` with the ``groups`` scope; a mapped claim with ``groups`` or with the scope of
    its own name (the token's scope only holds scopes the client is allowed: RFC 6749 3.3)."""
    wanted = set(scopes)
    claims: dict[str, Any] = {}
    if "groups" in wanted:
        claims["groups"] = list(found.groups)
    for claim, values in found.mapped.items():
        if "groups" in wanted or claim in wanted:
            claims[claim] = list(values)
    return claims


def wants_group_claims(scopes: Iterable[str]) -> bool:
    """Whether a scope can release anything from groups: ``groups`` or a claim scope (any scope
    that is not a standard one). Saves the query for the plain openid/profile/email sign-in."""
    return any(s not in ("openid", "profile", "email", "offline_access") for s in scopes)


#: Why a grant was revoked when its user lost access to its client.
GROUP_ACCESS_REVOKED = backchannel_logout.GROUP_ACCESS_REVOKED

#: The key of PostgreSQL's transaction-level advisory lock that ``lock_access_changes`` takes.
ACCESS_CHANGES_LOCK = 0x1D9_ACCE55


def lock_access_changes(db: Session) -> None:
    """Changes of who may use which client are made one after the other, until this transaction
    ends: a membership removed, a group deleted, a client's allowed groups or any other setting
    changed (``idp.services.clients.claim_version`` takes it first, before the client's row, so
    that every change takes the two locks in the same order).

    ``revoke_grants_without_access`` asks whether the user is still in one of the client's
    allowed groups. Under PostgreSQL's READ COMMITTED, two changes at once (a user taken out of
    each of a client's two allowed groups by two admins, a group deleted while the user leaves
    the other, the allowed groups narrowed to the one the user is leaving) each saw the other's
    rows as they were before it: each found the user still allowed, neither revoked, and a user
    in no allowed group kept a live grant. Taken before either reads, the second waits for the
    first to commit, and its statements see it. SQLite's writers already go one at a time
    (idp.sqlite_writers): nothing to take there."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(func.pg_advisory_xact_lock(ACCESS_CHANGES_LOCK)))


def revoke_for_lost_access(db: Session, grant_id: str, now: datetime, *, told: bool) -> None:
    """Revoke grant ``grant_id``, whose user the token endpoint found outside its client's
    allowed groups (idp.oidc.group_gate). ``told``: the grant issued an ID token before (a
    refresh), so its client is told as when leaving the group revokes it
    (``revoke_grants_without_access``), and the session's end tells it no second time
    (``backchannel_logout.ANNOUNCED_REVOCATIONS``); a code or device code redeemed now never
    gave it one."""
    revoked = db.execute(
        update(Grant).where(Grant.id == grant_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=GROUP_ACCESS_REVOKED)
        .returning(*backchannel_logout.REVOKED_GRANT)
        .execution_options(synchronize_session=False)
    ).all()  # fmt: skip
    if told:
        backchannel_logout.announce_access_ended(db, revoked, now)


def revoke_grants_without_access(
    db: Session,
    now: datetime,
    *,
    client_ids: Sequence[str] | None = None,
    user_ids: Sequence[str] | None = None,
) -> int:
    """Revoke live grants whose user may no longer use their client (restricted, and the user in
    none of its allowed groups), and tell each client for the sessions it received tokens in
    (``backchannel_logout.announce_access_ended``: its own session of the user ends too). One
    UPDATE; returns how many grants it revoked."""
    allowed = exists().where(
        GroupMember.user_id == Grant.user_id,
        ClientAllowedGroup.group_id == GroupMember.group_id,
        ClientAllowedGroup.client_id == Grant.client_id,
    )
    restricted = select(Client.client_id).where(Client.restricted_to_groups.is_(True))
    statement = update(Grant).where(
        Grant.revoked_at.is_(None), Grant.client_id.in_(restricted), ~allowed
    )
    if client_ids is not None:
        statement = statement.where(Grant.client_id.in_(list(client_ids)))
    if user_ids is not None:
        statement = statement.where(Grant.user_id.in_(list(user_ids)))
    revoked = db.execute(
        statement.values(revoked_at=now, revoked_reason=GROUP_ACCESS_REVOKED)
        .returning(*backchannel_logout.REVOKED_GRANT)
        .execution_options(synchronize_session=False)
    ).all()
    backchannel_logout.announce_access_ended(db, revoked, now)
    return len(revoked)
