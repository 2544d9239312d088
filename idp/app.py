"""The application factory: settings, extensions, the container, blueprints, hooks, error pages."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    Response,
    jsonify,
    make_response,
    render_template,
    request,
)
from flask.ctx import RequestContext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from idp.composition import Container
from idp.database import configure_engine, is_outage
from idp.database import engine_options as engine_options_for
from idp.extensions import csrf, db
from idp.json_provider import JSONProvider
from idp.services.claims import describe_scope
from idp.services.crypto import derive_key
from idp.services.dependencies import DependencyUnavailableError
from idp.services.portal import backup_words
from idp.settings import Settings, SettingsError, load_settings
from idp.thin_reads import ThinReads
from idp.web.answers import Answer
from idp.web.error_wording import error_wording
from idp.web.form_request import form_request_class, refuse_malformed_input
from idp.web.routing import BuiltOnFirstUseRule


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the application: settings, extensions, blueprints, CLI (Flask tutorial's factory)."""
    settings = load_checked_settings(overrides)
    instance_path = Path(settings.instance_path).resolve()
    # Its owner's alone when idp makes it (0700): the database, the metrics and the mail written
    # there hold secrets (docs/operations.md); one the operator made keeps its permissions.
    instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The package's name, not this module's: the application's name, its logger ("idp" in every
    # log line it writes) and the directory its templates and static files are found in.
    app = IdpFlask("idp", instance_path=str(instance_path))
    app.json = JSONProvider(app)
    app.config.update(_flask_config(settings))
    app.request_class = form_request_class(app.config["MAX_CONTENT_LENGTH"])

    db.init_app(app)
    csrf.init_app(app)
    with app.app_context():
        configure_engine(db.engine)

    # What the app builds once: settings, keys, hashers, caches and the one clock the views read
    # the time through (idp.composition.clock; tests set a frozen one, tests/support/clock.py).
    app.extensions["idp"] = container = Container.build(settings)
    with app.app_context():
        container.reads = ThinReads(db.engine)
    from idp.oidc.server import create_authorization_server

    app.extensions["idp.oauth"] = create_authorization_server(app)

    from idp.account import bp as account_bp
    from idp.admin import bp as admin_bp
    from idp.api import bp as api_bp
    from idp.device.views import bp as device_bp
    from idp.login.views import bp as login_bp

    # Imported for their routes: both page modules of the provider register on ``oidc_bp``.
    from idp.oidc import token_views, views  # noqa: F401
    from idp.oidc.blueprint import bp as oidc_bp
    from idp.ops import bp as ops_bp
    from idp.signup.views import bp as signup_bp

    for blueprint in (
        oidc_bp,
        login_bp,
        account_bp,
        admin_bp,
        signup_bp,
        device_bp,
        ops_bp,
        api_bp,
    ):
        app.register_blueprint(blueprint)

    from idp.web import docs_link, issuer_address, outbox_hint, page_url, static_url, when
    from idp.web.background import (
        deliver_left_over,
        schedule_checkpoint,
        schedule_outbox,
        schedule_prune,
    )
    from idp.web.headers import (
        ResponseHeaders,
        a_label_location,
        add_security_headers,
        csp_nonce,
    )
    from idp.web.sessions import (
        CsrfCookieSessions,
        LazySessionContext,
        record_last_seen_after,
        viewer_is_admin,
    )

    app.session_interface = CsrfCookieSessions()
    app.request_context_class = LazySessionContext

    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.jinja_env.globals["outbox_hint"] = outbox_hint
    app.jinja_env.globals["viewer_is_admin"] = viewer_is_admin
    app.jinja_env.globals["docs_link"] = docs_link
    app.jinja_env.globals["static_url"] = static_url
    app.jinja_env.globals["page_url"] = page_url
    app.context_processor(issuer_address)
    app.jinja_env.filters["describe_scope"] = describe_scope
    app.jinja_env.filters["backup_words"] = backup_words
    app.jinja_env.filters["when"] = when
    from idp import observability

    # First: the request id and the timing cover every other hook (docs/operations.md).
    observability.init_app(app)
    app.after_request(add_security_headers)
    app.after_request(a_label_location)
    after_answer: list[Callable[[Any], Any]] = [schedule_prune]
    if container.reads.checkpoints.interval > 0:  # SQLite on a file
        after_answer.append(schedule_checkpoint)
    after_answer.append(schedule_outbox)
    for schedule in after_answer:
        app.after_request(schedule)
    app.before_request(_refuse_malformed_input)
    _register_error_pages(app)

    # The token side's hot endpoints below Flask's request machinery, with the same hooks' work
    # (idp.web.direct); inside ProxyFix, which gives both the client's address.
    from idp.oidc.token_views import DIRECT_ROUTES
    from idp.web.direct import DirectEndpoints

    app.wsgi_app = DirectEndpoints(  # type: ignore[method-assign]
        app, DIRECT_ROUTES, after_answer, functools.partial(note_failure, app)
    )
    if settings.trusted_proxies:
        # Werkzeug's ProxyFix takes the address the last N trusted hops saw (the right-most
        # X-Forwarded-For entries), so a client cannot forge its own (RFC 7239 8.1).
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.wsgi_app = ResponseHeaders(  # type: ignore[method-assign]
        app.wsgi_app,
        secure_transport=settings.secure_transport,
        hsts_include_subdomains=settings.hsts_include_subdomains,
    )

    # Flask-SQLAlchemy's own teardown removes the session too: this one does it, after
    # delivering what a CLI context committed, and only when the context made a session at all
    # (a discovery or JWKS request from cache never does; asking the registry is cheaper than
    # removing nothing twice).
    with contextlib.suppress(ValueError):
        app.teardown_appcontext_funcs.remove(db._teardown_session)

    @app.teardown_appcontext
    def _rollback_unfinished(_exc: BaseException | None) -> None:
        if not db.session.registry.has():
            return  # nothing read a browser session either (it is read through the Session)
        try:
            deliver_left_over()
        finally:
            db.session.remove()
            record_last_seen_after()

    return app


class WholeBodyResponse(Response):
    """A Flask response whose body, already in memory, goes to the WSGI server as a list of one
    ``bytes`` when nothing waits for it to be sent (no ``call_on_close``, idp.web.background).

    PEP 3333 lets an application answer with any iterable; Werkzeug wraps every body in a
    ``ClosingIterator``, for its close callbacks. granian sends a list's bytes in one call and
    iterates anything else through its runtime: a Flask hello-world answered as a list costs
    about 12 µs less of the server's CPU per request, a seventh of what it costs
    (docs/performance-rounds.md, "The thirty-first round"). The direct endpoints answer with a
    list already (idp.web.direct). A streamed body, a file or a response with work after it
    keeps Werkzeug's iterator."""

    def get_app_iter(self, environ: dict[str, Any]) -> Iterable[bytes]:
        if self._on_close or not self.is_sequence:
            return super().get_app_iter(environ)
        status = self.status_code
        # RFC 9110 9.3.2 and 15: no content for HEAD, 1xx, 204 and 304 (as Werkzeug decides).
        if environ["REQUEST_METHOD"] == "HEAD" or 100 <= status < 200 or status in (204, 304):
            return []
        return [b"".join(self.iter_encoded())]


class IdpFlask(Flask):
    """Flask, remembering which of its hooks and views are coroutines: it asks ``inspect`` again
    for every hook of every request (a dozen here), and idp has none (docs/performance.md,
    "Before and after, per change"). Flask's documentation names ``ensure_sync`` as the method to
    override."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        known = self._synchronous
        if func not in known:
            synchronous = super().ensure_sync(func)
            if synchronous is not func:
                return synchronous  # a coroutine: wrapped anew, as Flask does
            known.add(func)
        return func

    @functools.cached_property
    def _synchronous(self) -> set[Callable[..., Any]]:
        return set()

    response_class = WholeBodyResponse

    #: Flask's documented hook for the rules ``add_url_rule`` makes (idp.web.routing).
    url_rule_class = BuiltOnFirstUseRule

    #: ``create_app`` sets idp.web.sessions.LazySessionContext, which opens the cookie session
    #: on first use.
    request_context_class: type[RequestContext] = RequestContext

    def request_context(self, environ: dict[str, Any]) -> RequestContext:
        # Flask's documentation names this method as the place to create a different context.
        return self.request_context_class(self, environ)


def load_checked_settings(
    overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """``load_settings``, then the checks that use the services' rules, each failure turned into
    a ``SettingsError`` so that a misconfigured deployment refuses to start."""
    from idp.services.email_addresses import EmailAddressError, parse_email_address
    from idp.services.lifetimes import LIFETIMES, parse_lifetime
    from idp.services.sign_in_policy import PolicyError, policy_from_settings

    settings = load_settings(overrides, environ)
    # Every lifetime has a lower and an upper bound, checked by the one parser the sign-in
    # policy uses too (idp.services.lifetimes): a zero session lifetime would let nobody
    # finish a sign-in, and an unbounded one overflows date arithmetic on every request.
    for name in LIFETIMES:
        try:
            parse_lifetime(name, getattr(settings, name))
        except ValueError as error:
            raise SettingsError(str(error)) from None
    try:
        policy_from_settings(settings)
    except PolicyError as error:
        raise SettingsError(str(error)) from error
    if settings.admin_email:
        try:
            parse_email_address(settings.admin_email, allow_local_domains=not settings.production)
        except EmailAddressError as error:
            raise SettingsError(f"admin_email: {error}") from error
    return settings


def _flask_config(settings: Settings) -> dict[str, Any]:
    secure = settings.secure_transport
    # No pool_pre_ping on PostgreSQL: the BEGIN each checkout sends is the check
    # (idp/postgresql.py, configured in idp.database.configure_engine).
    engine_options = engine_options_for(settings.sqlalchemy_url)
    # A database error's message would otherwise carry the statement's parameters (token and
    # password hashes, emails) into the log.
    engine_options["hide_parameters"] = True
    return {
        "IDP_SETTINGS": settings,
        # Flask's own signed cookie carries only the CSRF token; a separate derived key.
        "SECRET_KEY": derive_key(settings.secret_key, "idp flask session").hex(),
        "SQLALCHEMY_DATABASE_URI": settings.sqlalchemy_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options,
        "SESSION_COOKIE_NAME": "__Host-idp_csrf" if secure else "idp_csrf",
        "SESSION_COOKIE_SECURE": secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_PATH": "/",
        # A sign-in page may stay open as long as its pending request lives.
        "WTF_CSRF_TIME_LIMIT": settings.pending_request_ttl,
        # No Referer check over https (Flask-WTF's "SSL strict"): every page says
        # Referrer-Policy: no-referrer (idp.web.headers), so a browser posts idp's own forms with
        # no Referer and, under that policy, "Origin: null" (Fetch, "append a request Origin
        # header"): the check refused every form. What it guards against, a CSRF cookie planted
        # by a network attacker over plain http, the __Host- prefix refuses already (RFC 6265bis
        # 4.1.3.2); the token, bound to that cookie, is the check.
        "WTF_CSRF_SSL_STRICT": False,
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        "MAX_FORM_MEMORY_SIZE": 256 * 1024,
        "MAX_FORM_PARTS": 200,
        "JSON_SORT_KEYS": False,
    }


def _refuse_malformed_input() -> None:
    refuse_malformed_input(request._get_current_object())  # type: ignore[attr-defined]


#: The endpoints whose clients are OAuth clients, not browsers: they always get OAuth's JSON
#: errors (RFC 6749 5.2, RFC 6750 3, RFC 7009 2.2.1, RFC 7662 2.3, RFC 8628 3.2, RFC 9126 2.3),
#: never an HTML page, also for a request refused before the endpoint read it (malformed input,
#: too large).
OAUTH_ENDPOINTS = frozenset({"oidc.token", "oidc.userinfo", "oidc.introspect", "oidc.revoke",
                             "oidc.device_authorization", "oidc.pushed_authorization"})  # fmt: skip


def _wants_json() -> bool:
    if request.endpoint in OAUTH_ENDPOINTS or request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _server_failure(outage: bool) -> Response:
    """The answer to a request that failed on the server's side: 503 with ``Retry-After`` while a
    storage dependency is unavailable, 500 otherwise; OAuth's JSON error for JSON clients (RFC
    6749 4.1.2.1 names ``temporarily_unavailable`` and ``server_error``), a calm page for
    browsers (the same ``Retry-After`` and page as a sign-in refused while Redis is down)."""
    from idp.unavailable import RETRY_AFTER_SECONDS, TITLE, server_failure

    status = 503 if outage else 500
    if _wants_json():
        status, body, headers = server_failure(outage)
        response = jsonify(body)
        response.headers.update(headers)
        response.status_code = status
        return response
    template, title, message = (
        ("errors/unavailable.html", TITLE,
         "idp cannot reach its storage right now. Nothing was lost: try again in a moment.")
        if outage
        else ("errors/error.html", "Something went wrong",
              "An unexpected error occurred. Please try again.")
    )  # fmt: skip
    response = make_response(render_template(template, title=title, message=message))
    response.status_code = status
    if outage:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def note_failure(app: Flask, error: Exception) -> bool:
    """A request failed on the server's side: its transaction rolled back and the failure
    logged. True when it failed because storage is unavailable (an outage: 503, not 500)."""
    outage = is_outage(error)
    try:
        db.session.rollback()
    except Exception:  # the connection the rollback would use may be the one that died
        app.logger.warning("rollback after a failed request failed too", exc_info=True)
    if outage:
        app.logger.error("storage unavailable: %s: %s", type(error).__name__, error)
    else:
        app.logger.exception("unhandled error")
    return outage


def _is_api_request() -> bool:
    return request.path == "/api/v1" or request.path.startswith("/api/v1/")


def _wrong_method_at_an_oauth_endpoint(app: Flask, error: MethodNotAllowed) -> Answer | None:
    """A method an OAuth endpoint does not take (``GET /token``): routing found no endpoint, so
    the request is matched again with a method the path takes to learn whose path it is. Its
    clients read JSON, not a page: OAuth's ``invalid_request`` (RFC 6749 5.2) with the 405's
    ``Allow`` (RFC 9110 15.5.6). None: the path is not an OAuth endpoint's."""
    allowed = sorted(m for m in error.valid_methods or () if m not in ("HEAD", "OPTIONS"))
    if not allowed:
        return None
    try:
        endpoint, _ = app.url_map.bind_to_environ(request.environ).match(method=allowed[0])
    except HTTPException:
        return None
    if endpoint not in OAUTH_ENDPOINTS:
        return None
    from idp.oidc.token_views import DIRECT_ROUTES

    description = f"The {request.method} method is not allowed here; use {' or '.join(allowed)}."
    refusal = Answer.malformed_oauth_request(405, description, endpoint)
    refusal.headers.append(("Allow", ", ".join(sorted(error.valid_methods or ()))))
    # What the endpoint adds to every answer, CORS where a page calls it, so that a page's
    # script reads this refusal as it reads the endpoint's own.
    route = DIRECT_ROUTES.get(request.path)
    return route.also(refusal) if route is not None else refusal


def _register_error_pages(app: Flask) -> None:
    """Calm pages for every HTTP error; never a stack trace."""

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Any:
        return render_template(
            "errors/error.html",
            title="Please try again",
            message="This form expired or was sent from another page. Reload it and try again.",
        ), 400

    @app.errorhandler(DependencyUnavailableError)
    def dependency_unavailable(error: DependencyUnavailableError) -> Any:
        from idp import unavailable

        return unavailable.answer(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        if _is_api_request():
            # An /api/v1 path no route matched (404, 405): the API's problem details too.
            from idp.api.core import api_http_error

            return api_http_error(error)
        db.session.rollback()
        if request.endpoint in OAUTH_ENDPOINTS:
            description = error.description or error.name
            refusal = Answer.malformed_oauth_request(
                error.code or 400, description, request.endpoint
            )
            if request.endpoint == "oidc.pushed_authorization":
                # A page's push refused before the endpoint read it is readable by the page, as
                # the endpoint's own answers are (idp.oidc.token_views ``pushed_authorization``).
                from idp.oidc.token_views import cors

                refusal = cors(refusal)
            return refusal.response()
        if isinstance(error, MethodNotAllowed):
            refused = _wrong_method_at_an_oauth_endpoint(app, error)
            if refused is not None:
                return refused.response()
        title, message = error_wording(error)
        code = error.code or 500
        return render_template("errors/error.html", title=title, message=message, code=code), code

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Any:
        outage = note_failure(app, error)
        if _is_api_request():
            from idp.api.problems import Problem, problem_response

            return problem_response(Problem("unavailable" if outage else "server-error"))
        return _server_failure(outage)
