"""Groups of users, and what a group means to each client: who may sign in, what claims it gets.

A client restricted to groups (``Client.restricted_to_groups``) admits only members of its
allowed groups; a restricted client whose last allowed group was deleted admits no one, never
everyone (docs/admins.md, "Groups, per-app access and claim maps").
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime, random_id, utcnow


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=random_id)
    #: The slug released in the ``groups`` claim: unique, lowercase (idp.services.groups).
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClientAllowedGroup(Base):
    __tablename__ = "client_allowed_groups"

    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class ClaimMap(Base):
    """Members of ``group_id`` get ``value`` in the client's claim ``claim``."""

    __tablename__ = "claim_maps"
    __table_args__ = (UniqueConstraint("client_id", "claim", "group_id", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), index=True
    )
    claim: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    value: Mapped[str] = mapped_column(String(200))
