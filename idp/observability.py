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
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import Flask, g, request
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
    environ = request.environ
    state = g._get_current_object()
    incoming = environ.get(REQUEST_ID_ENVIRON, "")
    # 128 random bits in hex, the shape of uuid4().hex without building a UUID object.
    request_id = incoming if WELL_FORMED_REQUEST_ID.match(incoming) else secrets.token_hex(16)
    state.request_id = environ[RESPONSE_REQUEST_ID] = request_id
    state.request_started = time.perf_counter()
    state.log_secrets = RequestSecrets()
    metrics.request_started()
    state.in_progress = True


def _finish(response: Response) -> Response:
    state = g._get_current_object()
    started = state.pop("request_started", None)
    if started is None:  # _start did not run (a before_request hook ahead of it failed)
        return response
    elapsed = time.perf_counter() - started
    current = request._get_current_object()  # type: ignore[attr-defined]
    endpoint = current.endpoint or "none"
    state.log_secrets.response = response
    status = response.status_code
    method = current.method
    if endpoint == "oidc.token":
        grant_type = _grant_type(current)
        metrics.token_request(grant_type, status, _oauth_error(response))
    metrics.request_finished(endpoint, method, status, elapsed)
    level = logging.DEBUG if endpoint in QUIET_ENDPOINTS else logging.INFO
    if log.isEnabledFor(level):
        method = method if method in HTTP_METHODS else "OTHER"
        # The line carries the request's fields (idp.json_logs) itself: known here already, and
        # looking them up again through Flask's proxies was a fifth of the line's cost.
        request_fields = {"request_id": state.request_id, "method": method, "endpoint": endpoint}
        duration_ms = round(elapsed * 1000, 2)
        if level == logging.INFO and write_closing_line(
            log, f"{method} {endpoint} {status}", request_fields, status, duration_ms
        ):
            return response
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
    return response


def _grant_type(current: Any) -> str:
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
        metrics.request_ended()


# -- secrets to keep out of this request's log lines ----------------------------------------------
class RequestSecrets:
    """The secret values of the current request and of its answer, collected when a log line that
    is redacted is written for the request (idp.json_logs iterates this), never before: most
    requests write only their closing line, made of endpoint names and numbers, and scanning
    every cookie, field and JSON answer for them cost about a tenth of a request without the
    database. The values are the same whenever they are collected (a request does not change);
    the answer's are added once it exists (lines written after ``_finish``)."""

    def __init__(self) -> None:
        self.response: Response | None = None
        self._from_request: frozenset[str] | None = None
        self._from_response: frozenset[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._from_request is None:
            self._from_request = _collected(_request_secrets)
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


def _request_secrets() -> Iterator[str]:
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


def _response_secrets(response: Response) -> Iterator[str]:
    for header in response.headers.getlist("Set-Cookie"):
        yield header.partition(";")[0].partition("=")[2]
    location = response.headers.get("Location", "")
    if "?" in location:
        yield from _named_values(parse_qsl(urlsplit(location).query))
    if response.is_json and not response.is_streamed:
        body = response.get_data()
        if len(body) <= MAX_SCANNED_BODY and SECRET_NAME_IN_BYTES.search(body):
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
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None
