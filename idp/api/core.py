"""How every API operation runs: bearer authentication, scopes, request parsing, problems.

``operation`` registers a view with its method, path, scope and models; the same record is what
``idp.api.openapi`` describes, so the document cannot list a route the API does not have, or
miss one (tests/functional/test_api.py compares it with the URL map).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from idp.api.blueprint import bp
from idp.api.problems import BY_STATUS, Problem, problem_response
from idp.composition import clock, services
from idp.extensions import csrf, db
from idp.models import ApiToken
from idp.services import audit
from idp.services.anonymous import budget_refused
from idp.services.api_tokens import (
    FAILED_AUTH_WINDOW,
    ApiTokenService,
    Refusal,
    actor_of,
    granted,
)
from idp.services.client_addresses import budget_address
from idp.services.client_fields import ClientRegistrationError
from idp.services.clients import StaleClientError, SubjectChangeUnconfirmedError
from idp.services.groups import GroupError, GroupInUseError, GroupNameTakenError
from idp.services.pages import CursorError
from idp.services.user_admin import LastAdminError, UserAdminError, UserConflictError

#: The largest request body the API reads (a client with a full JWKS fits well within it).
MAX_BODY = 64 * 1024
#: RFC 6750 3: the protection space.
REALM = "idp"

# The API takes no cookies, so there is no ambient credential for a forged request to ride on:
# the CSRF check has nothing to protect here (docs/security.md, "Admin API").
csrf.exempt(bp)


@dataclass(frozen=True)
class Operation:
    method: str
    #: The Flask rule under the blueprint's prefix, e.g. ``/clients/<client_id>``.
    rule: str
    endpoint: str
    summary: str
    #: None: no token needed (the OpenAPI document only).
    scope: str | None
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    #: The client's ETag must come back in If-Match (RFC 9110 13.1.1).
    if_match: bool = False
    tag: str = ""
    #: Also needed when the operation makes an admin or acts on one (idp.api.users): said in the
    #: document, checked by the view.
    on_admins: str | None = None
    #: The problem types the operation's services may refuse with (a rule about a value, the
    #: state of a resource), beside those every operation of its kind may answer
    #: (idp.api.openapi.problems_of).
    refusals: tuple[str, ...] = ()
    #: An operation that creates a resource: the path parameter naming it and the member of the
    #: answer holding its value, from which the document links the answer to the operations on
    #: the new resource (OpenAPI 3.1 4.8.20, Link Object).
    creates: tuple[str, str] | None = None


OPERATIONS: list[Operation] = []


def operation(
    method: str, rule: str, *, summary: str, scope: str | None, tag: str, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``view`` as the API's ``method rule``; it receives ``body`` and ``query`` as
    validated models when the operation has them."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        op = Operation(method, rule, f"api.{view.__name__}", summary, scope, tag=tag, **options)
        OPERATIONS.append(op)

        @functools.wraps(view)
        def run(**kwargs: Any) -> Any:
            if op.scope is not None:
                require_scope(op.scope)
            if op.query is not None:
                kwargs["query"] = _parse_query(op.query)
            if op.body is not None:
                kwargs["body"] = _parse_body(op.body, required=op.body_required)
            return view(**kwargs)

        bp.add_url_rule(rule, view.__name__, run, methods=[method], provide_automatic_options=False)
        return view

    return decorate


# -- authentication --------------------------------------------------------------------------------
def token_service() -> ApiTokenService:
    return services().api_tokens(None)


def _challenge(error: str = "", **params: str) -> dict[str, str]:
    """RFC 6750 3: ``WWW-Authenticate: Bearer`` with the error, when a token was presented."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    parts.extend(f'{name}="{value}"' for name, value in params.items())
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


@bp.before_request
def _authenticate() -> None:
    if (request.content_length or 0) > MAX_BODY:
        # RFC 9110 15.5.14; before anything reads it (the application's own limit is for forms).
        raise Problem("payload-too-large", f"The body is larger than {MAX_BODY} bytes.")
    if request.endpoint == "api.openapi_document":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        # RFC 6750 3.1: a request without credentials gets no error code.
        raise Problem("authentication-required", headers=_challenge())
    presented = presented.strip()
    now = clock().now()
    # One host holds a whole IPv6 /64 (RFC 4291 2.5.1): budgeted as one address, or each
    # refusal's audit row could be written without end, one address at a time (ASVS 7.1).
    address = budget_address(request.remote_addr or "")
    budget = services().failed_api_auth_budget
    service = token_service()
    result = service.authenticate(presented, now)
    if isinstance(result, Refusal):
        # Past the budget a refused token is neither audited nor counted, only answered 429. A
        # token that authenticates is served all the same: the budget bounds what unknown tokens
        # cost, and must not let anyone who shares the address (a CI provider's egress, a NAT)
        # shut its automation out with made-up tokens (a guess at 256 bits is hopeless anyway).
        if budget.exhausted("api-auth", address, now):
            retry = budget_refused("api_auth", FAILED_AUTH_WINDOW, now)  # RFC 9110 10.2.3
            raise Problem("too-many-requests", headers={"Retry-After": str(retry)})
        service.record_failure(result, presented)
        db.session.commit()
        budget.spend("api-auth", address, now)
        # Expired, revoked, unknown and malformed alike: the answer tells a holder nothing.
        raise Problem(
            "invalid-token",
            headers=_challenge(
                "invalid_token", error_description="The token is invalid, expired or revoked"
            ),
        )
    service.touch(result, now)
    db.session.commit()
    g.api_token = result
    g.api_scopes = granted(result.scopes)


def current_token() -> ApiToken:
    token: ApiToken = g.api_token
    return token


def actor() -> str:
    """The audit log's actor of this request's changes: ``api-token:<name>``."""
    return actor_of(current_token())


def require_scope(scope: str, why: str = "") -> None:
    """403 insufficient_scope (RFC 6750 3.1) unless the token has ``scope``; ``why`` says
    what needs it when the operation's own scope was not enough."""
    if scope not in g.api_scopes:
        _record_denial(scope)
        raise Problem(
            "insufficient-scope",
            f"{why or 'This'} needs the {scope} scope.",
            headers=_challenge("insufficient_scope", scope=scope),
            scope=scope,
        )


def _record_denial(scope: str) -> None:
    """Audit the refusal, at most ``FAILED_AUTH_LIMIT`` rows a token and window: a token that may
    only read must not be able to fill the audit log one refused request at a time. Nothing of
    the request's own is kept: every operation asks for its scopes before it changes anything."""
    token, now = current_token(), clock().now()
    if services().failed_api_auth_budget.spend("api-denied", token.id, now):
        db.session.rollback()
        token_service().record_denial(token, scope, request.endpoint or "")
        db.session.commit()


# -- input -----------------------------------------------------------------------------------------
def _errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as RFC 9457 3's example extension: a JSON Pointer (RFC 6901) each."""
    found = []
    for item in error.errors(include_url=False, include_input=False)[:20]:
        pointer = "".join(
            "/" + str(part).replace("~", "~0").replace("/", "~1") for part in item["loc"]
        )
        found.append({"pointer": pointer or "/", "detail": item["msg"]})
    return found


def _parse_body(model: type[BaseModel], *, required: bool) -> BaseModel:
    data = request.get_data(cache=False)
    if len(data) > MAX_BODY:  # a body sent without Content-Length (chunked)
        raise Problem("payload-too-large", f"The body is larger than {MAX_BODY} bytes.")
    if not data:
        if required:
            raise Problem("invalid-body", "This operation needs a JSON body.")
        return model()
    if request.mimetype != "application/json":
        raise Problem("unsupported-media-type", "Send the body as application/json.")
    try:
        # The application's parser (idp.json_provider): too deep a nesting, a NUL character, a
        # lone surrogate, NaN or Infinity is malformed input.
        value = current_app.json.loads(data)
    except ValueError:
        raise Problem("malformed-json", "The body is not valid JSON (RFC 8259).") from None
    try:
        # Strict: "5" is not a number and 1 is not true; unknown members are refused (the
        # models forbid extras) so that a typo never passes silently.
        return model.model_validate(value, strict=True)
    except ValidationError as error:
        raise Problem("invalid-body", errors=_errors(error)) from None


def _parse_query(model: type[BaseModel]) -> BaseModel:
    values = {key: request.args.getlist(key)[-1] for key in request.args}
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise Problem("invalid-query", errors=_errors(error)) from None


# -- errors ----------------------------------------------------------------------------------------
@bp.errorhandler(Problem)
def _problem(problem: Problem) -> Any:
    db.session.rollback()
    return problem_response(problem)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Any:
    return api_http_error(error)


def api_http_error(error: HTTPException) -> Any:
    """Werkzeug's HTTP errors (routing, body size) as problems; also used by the application's
    handler for ``/api/`` paths that match no route."""
    db.session.rollback()
    kind = BY_STATUS.get(error.code or 500, BY_STATUS[400])
    problem = Problem(kind.slug, error.description or "")
    if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
        problem.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return problem_response(problem)


@bp.errorhandler(StaleClientError)
def _stale(_error: StaleClientError) -> Any:
    return _problem(Problem("precondition-failed", "The client changed since it was read."))


@bp.errorhandler(CursorError)
def _cursor_error(error: CursorError) -> Any:
    return _problem(Problem("invalid-query", str(error)))


@bp.errorhandler(ClientRegistrationError)
@bp.errorhandler(UserAdminError)
@bp.errorhandler(GroupError)
@bp.errorhandler(audit.AuditFilterError)
def _refused(error: ValueError) -> Any:
    """A service refused the change (nothing was changed: the transaction is rolled back)."""
    slug = "invalid-value"
    if isinstance(error, LastAdminError):
        slug = "last-admin"
    elif isinstance(error, GroupInUseError):
        slug = "group-in-use"
    elif isinstance(error, SubjectChangeUnconfirmedError):
        slug = "subject-change"
    elif isinstance(error, UserConflictError | GroupNameTakenError):
        slug = "conflict"
    elif isinstance(error, audit.AuditFilterError):
        slug = "invalid-query"
    return _problem(Problem(slug, str(error)))


def not_found(what: str) -> Problem:
    return Problem("not-found", f"There is no {what}.")


def no_store(response: Any) -> Any:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.after_request
def _api_headers(response: Any) -> Any:
    # Responses may carry secrets (a new client secret, a login link): never cached (RFC 9111
    # 5.2.2.5). No CORS headers are ever added: other origins' scripts cannot read the API.
    response.headers["Cache-Control"] = "no-store"
    return response
