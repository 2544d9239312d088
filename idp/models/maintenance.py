"""Housekeeping runs shared by every node: which job last ran, and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.models.base import Base, UTCDateTime


class MaintenanceRun(Base):
    """One row per job (``prune``): the node that claims it updates ``last_run_at`` atomically,
    so that among many nodes only one runs the job per interval (idp.services.retention)."""

    __tablename__ = "maintenance_runs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
