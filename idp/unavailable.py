"""The answer while a dependency a request needs is down (docs/operations.md, "Redis").

A sign-in that needs the attempt counters (or a WebAuthn challenge kept in Redis) cannot be
decided safely without them, so it is refused, never let through (fail closed): a page that says
so, or JSON for the JSON endpoints, with 503 and ``Retry-After`` (RFC 9110 15.6.4, 10.2.3). Each
refusal is counted in the metrics; the audit log gets one row per process and breaker window,
with the count of the refusals it stands for (idp.services.dependencies.CircuitBreaker.refused).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import jsonify, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from idp import metrics
from idp.composition import clock, request_context, runtime
from idp.extensions import db
from idp.services import audit
from idp.services.audit import RequestContext
from idp.services.dependencies import RETRY_AFTER_SECONDS, DependencyUnavailableError, Refusals

log = logging.getLogger(__name__)

#: Stable texts: operators' checks and the multi-node fault tests look for them.
TITLE = "Temporarily unavailable"
MESSAGE = "Signing in is temporarily unavailable. Please try again shortly."
#: RFC 6749 4.1.2.1 names this error for a server that cannot answer for now.
JSON_ERROR = "temporarily_unavailable"
#: Endpoints whose every answer is OAuth's JSON (RFC 6749 5.2), whatever the request accepts:
#: the pushed authorization endpoint (RFC 9126 2.3) and the device authorization endpoint
#: (RFC 8628 3.2). A client library reads their refusal; it cannot read a page.
OAUTH_JSON_ENDPOINTS = frozenset({"oidc.pushed_authorization", "oidc.device_authorization"})
#: Of those, the one a single-page app calls from its page (a public client pushes, RFC 9126):
#: its refusal is readable by any origin, as its other answers are (idp.oidc.token_views ``cors``).
READABLE_BY_ANY_ORIGIN = frozenset({"oidc.pushed_authorization"})


def answer(error: DependencyUnavailableError) -> Any:
    """503, counted, audited once per process and breaker window; JSON for JSON requests, else
    the page."""
    refused(error, request.endpoint or "unknown", request_context())
    response: Any
    if request.blueprint == "api":
        from idp.api.problems import Problem, problem_response

        response = problem_response(Problem("unavailable", MESSAGE))
    elif request.endpoint in OAUTH_JSON_ENDPOINTS:
        response = jsonify(error=JSON_ERROR, error_description=MESSAGE)
    elif request.is_json or request.accept_mimetypes.best == "application/json":
        response = jsonify(error=JSON_ERROR, message=MESSAGE)
    else:
        response = render_template("errors/unavailable.html", title=TITLE, message=MESSAGE)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.endpoint in READABLE_BY_ANY_ORIGIN:
        headers["Access-Control-Allow-Origin"] = "*"
        headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response, 503, headers


def refused(error: DependencyUnavailableError, endpoint: str, context: RequestContext) -> None:
    """A request to ``endpoint`` refused for want of ``error.dependency``: logged, counted,
    its work rolled back, audited once per process and breaker window. Every such refusal goes
    through here: the pages' and the JSON endpoints' (``answer``), and the direct endpoints'
    (idp.web.direct: token and UserInfo, where a public client's DPoP proof spends a budget in
    Redis, RFC 9449 11.1)."""
    log.warning("refused %s: %s is unavailable", endpoint, error.dependency)
    metrics.dependency_refusal(error.dependency, endpoint)
    db.session.rollback()
    now = clock().now()
    # Redis is the one dependency refused this way; its breaker keeps the refusals' tally.
    breaker = runtime().redis_breaker
    refusals = breaker.refused(endpoint, now)
    if refusals is not None:
        _audit(error, endpoint, refusals, breaker.open_for, context)


def _audit(
    error: DependencyUnavailableError,
    endpoint: str,
    refusals: Refusals,
    window: float,
    context: RequestContext,
) -> None:
    """The row that stands for ``refusals`` (this request's and those folded into it): the
    address and user agent are this request's, an example of the others."""
    try:
        audit.record(db.session(), "dependency.unavailable", outcome="failure",
                     context=context, dependency=error.dependency, endpoint=endpoint,
                     reason=error.reason, refused=refusals.count,
                     since=refusals.since.isoformat(), by_endpoint=refusals.by_endpoint,
                     aggregated=True,
                     note=(f"one row per worker each {window:g} s of the outage: "
                           f"refused counts the {error.dependency} refusals since its previous "
                           "row, idp_dependency_refusals_total every one"))  # fmt: skip
        db.session.commit()
    except SQLAlchemyError:  # the database is down too: the log line above stays
        db.session.rollback()
        log.exception("could not audit %d refusals while %s is unavailable", refusals.count,
                      error.dependency)  # fmt: skip


def server_failure(outage: bool) -> tuple[int, dict[str, str], dict[str, str]]:
    """The JSON answer to a request that failed on the server's side, as status, body and
    headers: 503 with ``Retry-After`` while a storage dependency is unavailable, 500 otherwise
    (RFC 6749 4.1.2.1 names ``temporarily_unavailable`` and ``server_error``)."""
    if outage:
        body = {
            "error": JSON_ERROR,
            "error_description": "The service is temporarily unavailable. Try again shortly.",
        }
        return 503, body, {"Cache-Control": "no-store", "Retry-After": str(RETRY_AFTER_SECONDS)}
    body = {"error": "server_error", "error_description": "An unexpected error occurred."}
    return 500, body, {"Cache-Control": "no-store"}  # fmt: skip
