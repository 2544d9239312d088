"""Endpoints for load balancers, orchestrators, monitoring and Prometheus (docs/operations.md).

- ``/healthz``: the process answers (a liveness probe: restart the node when it fails).
- ``/readyz``: this node can serve its core traffic: the database answers and accepts a write
  (a readiness probe: send no traffic while it fails). Redis counts only with
  ``readiness_requires_redis``: without it only some sign-ins stop, and a balancer that took every
  node out for it would stop everything else too. The answer names the dependency that failed,
  nothing more: the reason goes to the log.
- ``/healthz/dependencies``: every dependency's state and what it is needed for, for dashboards
  and alerts; behind the metrics token like ``/metrics`` (it tells an outsider when the attempt
  counters are down).
- ``/metrics``: Prometheus text exposition, summed over the node's workers, behind a bearer token
  (``metrics_token``); without a token configured it does not exist (404).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from idp import metrics
from idp.composition import clock, runtime
from idp.extensions import csrf, db
from idp.services.attestation import expired_roots
from idp.services.health import DependencyState, HealthReport, database_state, redis_state

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Any:
    """The process is alive."""
    return _no_store(jsonify(status="ok"))


@bp.get("/readyz")
def readyz() -> Any:
    """The node can serve its core traffic: the database answers and accepts writes (and Redis
    answers, when ``readiness_requires_redis`` says the node cannot work without it)."""
    requires_redis = runtime().settings.readiness_requires_redis
    report = HealthReport(_dependency_states(include_redis=requires_redis), requires_redis)
    response = jsonify(status="ok" if report.ready else "unavailable", checks=report.checks())
    response.status_code = 200 if report.ready else 503
    return _no_store(response)


@bp.get("/healthz/dependencies")
@csrf.exempt
def dependencies() -> Any:
    """Each dependency's state, for monitoring (idp.services.health.HealthReport.document)."""
    refused = _refuse_unless_scraper()
    if refused is not None:
        return refused
    roots = runtime().relying_party.attestation_roots
    expired = expired_roots(roots, clock().now()) if roots else None
    if expired:
        # Checked at start-up only: a root that ended since refuses its vendor's keys silently.
        log.warning("webauthn_attestation_roots: %s; registrations through it are refused "
                    "until it is replaced", "; ".join(expired))  # fmt: skip
    report = HealthReport(_dependency_states(include_redis=True),
                          runtime().settings.readiness_requires_redis, expired)  # fmt: skip
    response = jsonify(report.document())
    response.status_code = 200 if report.ready else 503
    return _no_store(response)


def _dependency_states(*, include_redis: bool) -> dict[str, DependencyState]:
    states = {"database": database_state(db.session(), clock().now())}
    redis = runtime().redis
    if include_redis and redis is not None:
        states["redis"] = redis_state(redis, runtime().redis_breaker)
    for name, state in states.items():
        if not state.ok:
            # The reason goes to the log, never to the answer (it may name a host or a port).
            log.warning("readiness: %s is %s: %s: %s", _LOG_NAMES[name], state.state,
                        state.reason, state.detail)  # fmt: skip
    return states


_LOG_NAMES = {"database": "the database", "redis": "Redis"}


@bp.get("/metrics", endpoint="metrics")
@csrf.exempt
def metrics_endpoint() -> Any:
    """Prometheus metrics for a scraper holding ``metrics_token`` (RFC 6750 2.1 bearer)."""
    refused = _refuse_unless_scraper()
    if refused is not None:
        return refused
    body, content_type = metrics.exposition()
    return _no_store(Response(body, content_type=content_type))


def _refuse_unless_scraper() -> Response | None:
    """None for a request carrying ``metrics_token``; else the answer: 404 without a token
    configured (the endpoint does not exist), 401 with a bearer challenge otherwise."""
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
    return None


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
