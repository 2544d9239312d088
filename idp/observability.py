"""Request-level observability: the request id, the secrets a request must keep out of the log,
the closing log line of every request, and the HTTP and token-endpoint metrics.

One pair of hooks (``init_app``) instead of calls in every view: the endpoint name, the status and
the token endpoint's form and JSON answer are all the metrics need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from flask import Flask, Request, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from idp import metrics
from idp.json_logs import HTTP_METHODS, SECRET_NAME, write_closing_line

log = logging.getLogger("idp.request")
#: A JSON answer without a secret-named key holds no secret to register (most of them).
SECRET_NAME_IN_BYTES = re.compile(SECRET_NAME.pattern.encode())

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_ENVIRON = "HTTP_X_REQUEST_ID"
#: Where ``_start`` leaves the id for ``idp.web.headers.ResponseHeaders``, which writes it into
#: the answer.
RESPONSE_REQUEST_ID = "idp.request_id"
#: An incoming request id is reused when it looks like one (a proxy's UUID or trace id); anything
#: else (too long, spaces, quotes, control characters) could forge or break log lines: replaced.
WELL_FORMED_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{8,128}$")
#: Probes and scrapes every few seconds: their lines only at DEBUG.
QUIET_ENDPOINTS = frozenset({"ops.healthz", "ops.readyz", "ops.metrics", "static"})
#: JSON bodies larger than this are not searched for secrets to redact (no token answer is).
MAX_SCANNED_BODY = 64 * 1024


def init_app(app: Flask) -> None:
    # Ahead of every other hook (CSRF protection among them, registered by its extension before
    # this): a request they refuse still gets its id, its log line and its count.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_end)


def _start() -> None:
    # The objects behind Flask's ``request`` and ``g`` proxies, resolved once: each attribute read
    # or written through a proxy looks the context up again (docs/performance.md, "Before and
    # after, per change").
    current = request._get_current_object()  # type: ignore[attr-defined]
    state = g._get_current_object()
    state.request_id, state.request_started = begin(current.environ)
    state.log_secrets = RequestSecrets(current)
    state.in_progress = True


def _finish(response: Response) -> Response:
    state = g._get_current_object()
    started = state.pop("request_started", None)
    if started is None:  # _start did not run (a before_request hook ahead of it failed)
        return response
    current = request._get_current_object()  # type: ignore[attr-defined]
    endpoint = current.endpoint or "none"
    state.log_secrets.response = response
    status = response.status_code
    oauth_error = None
    grant_type = None
    if endpoint == "oidc.token":
        grant_type = grant_type_of(current)
        oauth_error = _oauth_error(response)
    close(state.request_id, started, current.method, endpoint, status, grant_type, oauth_error)
    return response


def begin(environ: dict[str, Any]) -> tuple[str, float]:
    """A request begins: its id (kept for ``idp.web.headers.ResponseHeaders``, which writes it
    into the answer), its start and the in-progress gauge. Flask's hook and the token side's
    direct endpoints (idp.web.direct) both begin and close every request through these two."""
    incoming = environ.get(REQUEST_ID_ENVIRON, "")
    # 128 random bits in hex, the shape of uuid4().hex without building a UUID object.
    request_id = incoming if WELL_FORMED_REQUEST_ID.match(incoming) else secrets.token_hex(16)
    environ[RESPONSE_REQUEST_ID] = request_id
    metrics.request_started()
    return request_id, time.perf_counter()


def close(
    request_id: str, started: float, method: str, endpoint: str, status: int,
    grant_type: str | None = None, oauth_error: str | None = None,
) -> None:  # fmt: skip
    """A request is answered: its metrics (the token endpoint's by grant type and outcome when
    ``grant_type`` is given) and its closing log line."""
    elapsed = time.perf_counter() - started
    if grant_type is not None:
        metrics.token_request(grant_type, status, oauth_error)
    metrics.request_finished(endpoint, method, status, elapsed)
    level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
    if not log.isEnabledFor(level):
        return
    method = method if method in HTTP_METHODS else "OTHER"
    # The line carries the request's fields (idp.json_logs) itself: known here already, and
    # looking them up again through Flask's proxies was a fifth of the line's cost.
    request_fields = {"request_id": request_id, "method": method, "endpoint": endpoint}
    duration_ms = round(elapsed * 1000, 2)
    if level == logging.INFO and write_closing_line(
        log, f"{method} {endpoint} {status}", request_fields, status, duration_ms
    ):
        return
    log.log(
        level,
        "%s %s %d",
        method,
        endpoint,
        status,
        extra={
            "status": status,
            "duration_ms": duration_ms,
            "plain": True,
            "request_fields": request_fields,
        },
    )


def grant_type_of(current: Any) -> str:
    """The token request's ``grant_type``, or "" for a body that could not be read as a form (too
    large: the 413 being answered; a client that went away): reading it again would raise again,
    inside this hook, and turn that answer into a 500."""
    try:
        return str(current.form.get("grant_type", ""))
    except HTTPException:
        return ""


def _end(_error: BaseException | None) -> None:
    # Teardown runs even when no response was made (an error in an error handler): the
    # in-progress gauge never keeps a request that is over.
    if g._get_current_object().pop("in_progress", False):
        end()


def end() -> None:
    """The request is over, answered or not: the in-progress gauge never keeps it."""
    metrics.request_ended()


# -- secrets to keep out of this request's log lines ----------------------------------------------
class RequestSecrets:
    """The secret values of the current request and of its answer, collected when a log line that
    is redacted is written for the request (idp.json_logs iterates this), never before: most
    requests write only their closing line, made of endpoint names and numbers, and scanning
    every cookie, field and JSON answer for them cost about a tenth of a request without the
    database. The values are the same whenever they are collected (a request does not change);
    the answer's are added once it exists (lines written after ``_finish``)."""

    def __init__(self, request: Request) -> None:
        self.request = request
        #: The answer, once it exists: a Werkzeug response, or the direct endpoints' (its
        #: ``Set-Cookie`` headers, its ``Location`` and its JSON body).
        self.response: Response | AnswerParts | None = None
        self._from_request: frozenset[str] | None = None
        self._from_response: frozenset[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._from_request is None:
            request = self.request
            self._from_request = _collected(lambda: _request_secrets(request))
        yield from self._from_request
        if self.response is not None:
            if self._from_response is None:
                response = self.response
                self._from_response = _collected(lambda: _response_secrets(response))
            yield from self._from_response


def _collected(values: Callable[[], Iterator[str]]) -> frozenset[str]:
    """What ``values`` yields up to a failure. This runs inside a log handler, where an error
    would lose the line. A body that cannot be parsed (too large, too many parts) could not be
    parsed by a view either, so no value of it can be in a message; the values found before it
    (credentials, cookies, query) are kept, and the central patterns still apply."""
    found: set[str] = set()
    with contextlib.suppress(HTTPException, ValueError):
        found.update(values())
    return frozenset(found)


def _request_secrets(request: Request) -> Iterator[str]:
    authorization = request.authorization
    if authorization is not None:
        # RFC 6749 2.3.1: client_secret_basic carries the secret as the Basic password.
        yield from (v for v in (authorization.password, authorization.token) if v)
    header = request.headers.get("Authorization", "")
    if header:
        yield header.partition(" ")[2].strip()
    yield from request.cookies.values()
    if _decodable(request.query_string):
        # (A query string that is not UTF-8 is refused with a 400 before any view reads it.)
        yield from _named_values(request.args.items(multi=True))
    yield from _named_values((request.view_args or {}).items())
    if request.mimetype == "application/x-www-form-urlencoded":
        yield from _named_values(request.form.items(multi=True))
    elif request.is_json and (request.content_length or 0) <= MAX_SCANNED_BODY:
        yield from _json_values(request.get_json(silent=True))


def _decodable(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class AnswerParts(NamedTuple):
    """What of an answer may hold a secret: its cookies, its ``Location`` and its JSON body."""

    set_cookies: list[str]
    location: str
    json_body: bytes | None


def _response_secrets(response: Response | AnswerParts) -> Iterator[str]:
    if isinstance(response, Response):
        headers = response.headers
        json_body = response.get_data() if response.is_json and not response.is_streamed else None
        response = AnswerParts(
            headers.getlist("Set-Cookie"), headers.get("Location", ""), json_body
        )
    for header in response.set_cookies:
        yield header.partition(";")[0].partition("=")[2]
    location = response.location
    if "?" in location:
        yield from _named_values(parse_qsl(urlsplit(location).query))
    body = response.json_body
    if body is not None and len(body) <= MAX_SCANNED_BODY and SECRET_NAME_IN_BYTES.search(body):
        try:
            yield from _json_values(json.loads(body))
        except ValueError:
            return


def _named_values(pairs: Iterable[tuple[str, Any]]) -> Iterator[str]:
    for key, value in pairs:
        if isinstance(value, str) and value and SECRET_NAME.search(key):
            yield value


def _json_values(document: Any, secret: bool = False, depth: int = 0) -> Iterator[str]:
    """String leaves under secret-named keys (anywhere below one: a WebAuthn credential)."""
    if depth > 6:
        return
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _json_values(value, secret or bool(SECRET_NAME.search(str(key))), depth + 1)
    elif isinstance(document, list):
        for item in document:
            yield from _json_values(item, secret, depth + 1)
    elif secret and isinstance(document, str) and document:
        yield document


def _oauth_error(response: Response) -> str | None:
    if response.status_code == 200 or not response.is_json:
        return None
    return oauth_error_of(response.get_data())


def oauth_error_of(json_body: bytes) -> str | None:
    """The ``error`` of an OAuth error answer's JSON body (RFC 6749 5.2), if it names one."""
    try:
        body = json.loads(json_body)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
