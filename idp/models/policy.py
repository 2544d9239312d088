"""Sign-in policy overrides set by admins (idp.services.sign_in_policy); absent rows mean the
configured default applies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime


class PolicyOverride(Base):
    __tablename__ = "policy_overrides"

    #: A ``SignInPolicy`` field name.
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The admin's user id, or None for the command line.
    updated_by: Mapped[str | None] = mapped_column(String(32), default=None)
