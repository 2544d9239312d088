"""Problem details (RFC 9457) for every error of the admin API, with stable ``type`` URIs.

The type URIs identify the problem and are documented in docs/api.md; they are not meant to be
fetched (RFC 9457 3.1.1: consumers SHOULD NOT dereference them automatically).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Response, current_app

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://idp.invalid/problems/"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.slug


_TYPES = (
    ProblemType("malformed-request", 400, "The request is malformed"),
    ProblemType("malformed-json", 400, "The body is not a JSON document"),
    ProblemType("invalid-query", 400, "A query parameter is invalid"),
    ProblemType("authentication-required", 401, "A bearer token is required"),
    ProblemType("invalid-token", 401, "The bearer token is invalid, expired or revoked"),
    ProblemType("insufficient-scope", 403, "The token lacks the scope this needs"),
    ProblemType("not-found", 404, "No such resource"),
    ProblemType("method-not-allowed", 405, "The method is not allowed on this resource"),
    ProblemType("conflict", 409, "The request conflicts with the current state"),
    ProblemType("last-admin", 409, "The deployment would be left without an active admin"),
    ProblemType("group-in-use", 409, "The group is some client's only allowed group"),
    ProblemType(
        "subject-change", 409, "The change gives every user of the client another sub; confirm it"
    ),
    ProblemType("precondition-failed", 412, "The resource changed since it was read"),
    ProblemType("payload-too-large", 413, "The body is too large"),
    ProblemType("unsupported-media-type", 415, "The body must be application/json"),
    ProblemType("invalid-body", 422, "The body does not match the operation's schema"),
    ProblemType("invalid-value", 422, "A value breaks a rule"),
    ProblemType("precondition-required", 428, "This change needs an If-Match header"),
    ProblemType("too-many-requests", 429, "Too many failed authentications from this address"),
    ProblemType("server-error", 500, "An unexpected error occurred"),
    ProblemType("unavailable", 503, "The service is temporarily unavailable"),
)
TYPES: dict[str, ProblemType] = {t.slug: t for t in _TYPES}
#: For HTTP errors raised by Flask or Werkzeug (routing, body size) rather than by a view.
BY_STATUS: dict[int, ProblemType] = {}
for _type in _TYPES:
    BY_STATUS.setdefault(_type.status, _type)


class Problem(Exception):  # noqa: N818 - RFC 9457 calls it a problem
    """An API error; ``problem_response`` renders it."""

    def __init__(
        self,
        slug: str,
        detail: str = "",
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or TYPES[slug].title)
        self.type = TYPES[slug]
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {
        "type": problem.type.uri,
        "title": problem.type.title,
        "status": problem.type.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    body.update(problem.extensions)
    response = current_app.response_class(
        current_app.json.dumps(body), status=problem.type.status, mimetype=MEDIA_TYPE
    )
    response.headers["Cache-Control"] = "no-store"
    for name, value in problem.headers.items():
        response.headers[name] = value
    return response
