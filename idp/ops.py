"""Health endpoints for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from idp.extensions import db

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    """The database answers."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:
        db.session.rollback()
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")
