"""Endpoints for load balancers, orchestrators and Prometheus (docs/operations.md).

- ``/healthz``: the process answers (a liveness probe: restart the node when it fails).
- ``/readyz``: the database, and Redis when configured, answer (a readiness probe: send no
  traffic while it fails). The answer names the dependency that failed, nothing more: the reason
  goes to the log.
- ``/metrics``: Prometheus text exposition, summed over the node's workers, behind a bearer token
  (``metrics_token``); without a token configured it does not exist (404).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request
from sqlalchemy import text

from idp import metrics
from idp.extensions import csrf, db
from idp.web import runtime

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is alive."""
    return _no_store(jsonify(status="ok"))


@bp.get("/readyz")
def readyz() -> Any:
    """Every dependency a request needs answers: the database, and Redis when configured."""
    checks = {"database": _database_ready()}
    if runtime().redis is not None:
        checks["redis"] = _redis_ready()
    ready = all(state == "ok" for state in checks.values())
    response = jsonify(status="ok" if ready else "unavailable", checks=checks)
    response.status_code = 200 if ready else 503
    return _no_store(response)


def _database_ready() -> str:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as error:
        db.session.rollback()
        log.warning("readiness: the database does not answer: %s", type(error).__name__)
        return "unavailable"
    return "ok"


def _redis_ready() -> str:
    try:
        runtime().redis.ping()
    except Exception as error:
        log.warning("readiness: Redis does not answer: %s: %s", type(error).__name__, error)
        return "unavailable"
    return "ok"


@bp.get("/metrics", endpoint="metrics")
@csrf.exempt
def metrics_endpoint() -> Any:
    """Prometheus metrics for a scraper holding ``metrics_token`` (RFC 6750 2.1 bearer)."""
    expected = runtime().settings.metrics_token
    if not expected:
        abort(404)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # Constant-time comparison: the token must not leak byte by byte through response timing.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        response = jsonify(error="invalid_token")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="idp metrics"'
        return response
    body, content_type = metrics.exposition()
    return _no_store(Response(body, content_type=content_type))


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
