"""Flask extensions, created once and bound in ``create_app``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, request
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from idp.models.base import Base
from idp.web.csrf_signing import csrf_token


class CsrfProtection(CSRFProtect):
    """Flask-WTF's CSRF protection of every browser form (docs/security.md), with its
    per-request hook asking in the order that costs least: the method first (GET, HEAD and
    OPTIONS change nothing and are never checked), then whether the endpoint is exempt, looked
    up once per endpoint instead of on every request (the token endpoint and the other OAuth
    endpoints, which authenticate their clients, not a browser). What is checked, and how, is
    Flask-WTF's own ``protect``; the exemptions are the ones ``exempt`` recorded, decided as
    Flask-WTF decides them (docs/performance.md, "Before and after, per change"). The token the
    templates put in a form is Flask-WTF's too, signed by idp.web.csrf_signing."""

    def __init__(self) -> None:
        super().__init__()
        self._exempt_view_locations: set[str] = set()
        self._exempt_blueprint_objects: set[Blueprint] = set()

    def exempt(self, view: Any) -> Any:
        if isinstance(view, Blueprint):
            self._exempt_blueprint_objects.add(view)
        elif isinstance(view, str):
            self._exempt_view_locations.add(view)
        else:
            self._exempt_view_locations.add(f"{view.__module__}.{view.__name__}")
        return super().exempt(view)

    def init_app(self, app: Flask) -> None:
        hooks = app.before_request_funcs.setdefault(None, [])
        known = len(hooks)
        processors = app.template_context_processors.setdefault(None, [])
        known_processors = len(processors)
        super().init_app(app)
        added = hooks[known:]
        # Flask-WTF's hook, replaced by ``protect_unsafe_request``. Were it ever another shape
        # (a later Flask-WTF), it stays: checked twice is still checked.
        if len(added) == 1 and getattr(added[0], "__module__", "") == "flask_wtf.csrf":
            hooks[known:] = [self.protect_unsafe_request]
        app.extensions["idp.csrf_exempt_endpoints"] = {}
        # The templates' token: Flask-WTF's, signed without a zlib attempt (idp.web.csrf_signing).
        # Flask-WTF hands its own to every render through a context processor too, which would
        # shadow the global: that processor goes, the globals serve every template.
        app.jinja_env.globals["csrf_token"] = csrf_token
        added_processors = processors[known_processors:]
        if len(added_processors) == 1 and added_processors[0].__module__ == "flask_wtf.csrf":
            del processors[known_processors:]

    def protect_unsafe_request(self) -> None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        current = request._get_current_object()  # type: ignore[attr-defined]
        config = app.config
        if current.method not in config["WTF_CSRF_METHODS"]:
            return
        if not (config["WTF_CSRF_ENABLED"] and config["WTF_CSRF_CHECK_DEFAULT"]):
            return
        endpoint = current.endpoint
        if not endpoint or self._is_exempt_endpoint(app, endpoint):
            return
        self.protect()

    def _is_exempt_endpoint(self, app: Flask, endpoint: str) -> bool:
        known: dict[str, bool] = app.extensions["idp.csrf_exempt_endpoints"]
        exempt = known.get(endpoint)
        if exempt is None:
            blueprint_name = endpoint.rpartition(".")[0]  # Flask's ``Request.blueprint``
            view = app.view_functions.get(endpoint)
            exempt = known[endpoint] = app.blueprints.get(
                blueprint_name
            ) in self._exempt_blueprint_objects or (
                view is not None
                and f"{view.__module__}.{view.__name__}" in self._exempt_view_locations
            )
        return exempt


db = SQLAlchemy(model_class=Base)
csrf = CsrfProtection()
