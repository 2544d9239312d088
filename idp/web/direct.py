"""The token side's hot endpoints, served below Flask's request machinery.

A relying party's token, introspection, revocation and userinfo requests are most of what an
identity provider serves, and each is one statement or transaction and a few microseconds of
cryptography: Flask's request context, URL routing, hook chains and Werkzeug's response object
were the largest part of what such a request cost (docs/performance-rounds.md, "The tenth round").
``DirectEndpoints`` is WSGI middleware in front of Flask: a request whose path and method one of
its routes names is answered here, in an application context (the database session, the
composition root, ``g``), with its own request object; every other request goes to Flask.

Every rule of the request floor holds here as in Flask's hooks, through the same functions: the
request id and its closing log line and metrics (idp.observability ``begin`` and ``close``), log
lines of the request redacted of its secrets and carrying its fields (idp.json_logs), the refusal
of malformed input (idp.web.form_request), the audit context (idp.composition), the work after the
answer (pruning, checkpoints, the outbox: idp.web.background), a refusal while Redis is down
(idp.unavailable) and a server failure's JSON answer. The security headers and the request id's
header are ``ResponseHeaders``' (idp.web.headers), around both. An OAuth client's request error
(a body too large, malformed input) is RFC 6749 5.2's JSON error here, not an HTML page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from flask import Flask, Request, g
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import ClosingIterator

from idp import observability
from idp.composition import Services, container
from idp.extensions import db
from idp.json_logs import DIRECT_REQUEST
from idp.request_gate import EXTENSION as REQUEST_GATE
from idp.services.audit import RequestContext
from idp.services.dependencies import DependencyUnavailableError
from idp.web.answers import Answer
from idp.web.form_request import refuse_malformed_input

StartResponse = Callable[..., Any]
WsgiApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _as_it_is(answer: Answer) -> Answer:
    return answer


class DirectRoute(NamedTuple):
    #: The Flask endpoint the same path has (its log line and metrics say this name).
    endpoint: str
    methods: frozenset[str]
    answer: Callable[[Request], Answer]
    #: What the route adds to an answer it did not make itself (a request refused before it
    #: ran, a server failure), as it adds to its own: the CORS headers without which a page's
    #: script cannot read the error at all.
    also: Callable[[Answer], Answer] = _as_it_is


class AfterAnswer:
    """What the work after an answer registers on (a Flask response's ``call_on_close``)."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], Any]] = []

    def call_on_close(self, callback: Callable[[], Any]) -> Callable[[], Any]:
        self.callbacks.append(callback)
        return callback


class DirectEndpoints:
    """WSGI middleware: ``routes`` (by path) answered here, everything else by ``app``'s Flask."""

    def __init__(
        self, app: Flask, routes: Mapping[str, DirectRoute],
        after_answer: Sequence[Callable[[AfterAnswer], object]],
        note_failure: Callable[[Exception], bool],
    ) -> None:  # fmt: skip
        self.app = app
        self.flask: WsgiApplication = app.wsgi_app
        self.routes = dict(routes)
        self.after_answer = tuple(after_answer)
        self.note_failure = note_failure

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self.routes.get(environ.get("PATH_INFO", ""))
        if route is None or environ.get("REQUEST_METHOD") not in route.methods:
            return self.flask(environ, start_response)
        return self.serve(route, environ, start_response)

    def serve(
        self, route: DirectRoute, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        app = self.app
        request_id, started = observability.begin(environ)
        try:
            current = app.request_class(environ)
            current.json_module = app.json
            log_secrets = observability.RequestSecrets(current)
            method = current.method
            fields = {"request_id": request_id, "method": method, "endpoint": route.endpoint}
            logging_as = DIRECT_REQUEST.set((fields, log_secrets))
            context = app.app_context()
            context.push()
            try:
                answer = self._answer(route, current)
                # In the order Flask runs its ``after_request`` hooks: the last registered first,
                # the closing line (registered first) last.
                after = AfterAnswer()
                for schedule in reversed(self.after_answer):
                    schedule(after)
                log_secrets.response = observability.AnswerParts([], "", answer.body)
                grant_type = oauth_error = None
                if route.endpoint == "oidc.token":
                    grant_type = observability.grant_type_of(current)
                    if answer.status != 200:
                        oauth_error = observability.oauth_error_of(answer.body)
                observability.close(
                    request_id, started, method, route.endpoint, answer.status,
                    grant_type, oauth_error,
                )  # fmt: skip
            finally:
                # Flask's teardown of the application context: the request's Session removed,
                # what a failed request left in the outbox delivered (idp.web.background).
                context.pop()
                DIRECT_REQUEST.reset(logging_as)
                current.close()  # the files of a multipart body, as Flask's context closes them
        finally:
            observability.end()
        start_response(answer.status_line, answer.wsgi_headers())
        if after.callbacks:
            return ClosingIterator([answer.body], after.callbacks)
        return [answer.body]

    def _answer(self, route: DirectRoute, current: Request) -> Answer:
        try:
            refuse_malformed_input(current)
            gate = self.app.extensions.get(REQUEST_GATE)
            if gate is not None:
                gate.hold_if_asked(current.environ)
            context = RequestContext.of(current.environ)
            # What ``idp.composition.services`` builds in a Flask request, acting for this one.
            g.idp_services = Services(container(self.app), db.session, context)
            return route.answer(current)
        except HTTPException as error:
            # RFC 6749 5.2: the client's request is malformed (or too large, 413).
            db.session.rollback()
            return route.also(Answer.malformed_oauth_request(
                error.code or 400, error.description or error.name, route.endpoint
            ))  # fmt: skip
        except DependencyUnavailableError as error:
            # Redis down, where a public client's DPoP proof spends its address's budget (RFC
            # 9449 11.1): the refusal every endpoint gives, counted and audited (idp.unavailable),
            # as OAuth's JSON 503 with Retry-After (RFC 6749 5.2, RFC 9110 10.2.3), not a 500.
            from idp.unavailable import refused, server_failure

            refused(error, route.endpoint, RequestContext.of(current.environ))
            status, body, headers = server_failure(True)
            return route.also(Answer.json(status, body, *headers.items()))
        except Exception as error:
            from idp.unavailable import server_failure

            status, body, headers = server_failure(self.note_failure(error))
            return route.also(Answer.json(status, body, *headers.items()))
