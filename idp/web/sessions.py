"""The browser's session: its cookie (RFC 6265bis), the session loader that reads it once per
request, and starting, promoting and ending sessions (idp.services.sessions decides)."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, after_this_request, flash, g, redirect, request, url_for
from flask import session as flask_session
from flask.ctx import RequestContext
from flask.sessions import (
    NullSession,
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)
from flask.wrappers import Request as FlaskRequest
from flask.wrappers import Response as FlaskResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.wrappers import Response

from idp.composition import clock, request_context, runtime, services
from idp.models import BrowserSession, User
from idp.services.sessions import last_seen_due, record_last_seen
from idp.web.csrf_signing import UncompressedSerializer, kept_serializer

log = logging.getLogger(__name__)


def session_cookie_name() -> str:
    # RFC 6265bis 4.1.3.2: a __Host- cookie is Secure, host-only and Path=/. Over plain http
    # (localhost development) Secure cookies are not sent back by every client, so no prefix.
    return "__Host-idp_session" if runtime().settings.secure_transport else "idp_session"


def current_session() -> BrowserSession | None:
    """The live browser session of this request, loaded once."""
    if "idp_session" not in g:
        cookie = request.cookies.get(session_cookie_name())
        # No cookie, no session (``load`` says the same): a browser signing in for the first time
        # costs no session service and no sign-in policy lookup.
        now = clock().now()
        found = services().sessions.load(cookie, now) if cookie else None
        if found is not None and request.method != "HEAD" and last_seen_due(found, now):
            # Written once the request is over (``record_last_seen_after``), by itself: a page
            # that commits nothing is activity too. Here it only reads as written. Not a HEAD:
            # no browser sends one to show a page, and a probe changes nothing (RFC 9110 9.3.2).
            set_committed_value(found, "last_seen_at", now)
            g.idp_session_seen = (found.id_hash, now)
        g.idp_session = found
    session: BrowserSession | None = g.idp_session
    return session


def forget_session() -> None:
    """The request's session ended while the request ran: from now on it has none."""
    g.idp_session = None
    g.pop("idp_session_seen", None)


def record_last_seen_after() -> None:
    """The request's session was seen (``current_session``): write it now that the request's own
    transaction is over, so that it waits for nothing of the request's."""
    seen = g.pop("idp_session_seen", None)
    reads = runtime().reads  # the application's (idp.app.create_app)
    if seen is None or reads is None:
        return
    try:
        record_last_seen(reads, *seen)
    except SQLAlchemyError:
        # Bookkeeping: a database gone since the answer costs at most a minute of idle time.
        log.warning("the session's last request was not recorded", exc_info=True)


def set_session_cookie(response: Response, value: str, max_age: int) -> None:
    settings = runtime().settings
    response.set_cookie(
        session_cookie_name(),
        value,
        max_age=max_age,
        path="/",
        secure=settings.secure_transport,
        httponly=True,
        # Lax: the cookie must come along when a relying party sends the user to /authorize.
        samesite="Lax",
    )


def clear_session_cookie(response: Response) -> None:
    settings = runtime().settings
    response.delete_cookie(
        session_cookie_name(),
        path="/",
        secure=settings.secure_transport,
        httponly=True,
        samesite="Lax",
    )


def browser_binding() -> str:
    """A random value in this browser's signed cookie: WebAuthn challenges are bound to it so that
    a challenge issued to one browser cannot be answered from another."""
    from flask import session

    value = session.get("webauthn_binding")
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session["webauthn_binding"] = value
    return value


def start_session(
    user: User | str,
    amr: list[str] | tuple[str, ...],
    response: Response,
    *,
    restricted: bool = False,
    passkey_only: bool = False,
    credential_id: str | None = None,
    backup_code: bool = False,
) -> None:
    """Sign the user in: a new server-side session, the previous one of this browser ended.
    ``user``: the user, or their id where the request holds no ORM object of them.
    ``restricted``: its only way forward is adding a sign-in method (a passkey alone with
    ``passkey_only``). ``credential_id``: the passkey that signed in (removing it ends the
    session). ``backup_code``: a backup code signed in (new codes end the session)."""
    previous = current_session()
    now = clock().now()
    service = services().sessions
    new = service.create(user, list(amr), request_context(), now, restricted=restricted,
                         passkey_only=passkey_only, previous=previous,
                         credential_id=credential_id, backup_code=backup_code)  # fmt: skip
    g.idp_session = new.session
    set_session_cookie(response, new.cookie_value, service.cookie_lifetime(new.session))


def promote_session(
    restricted: BrowserSession, credential_id: str | None = None
) -> BrowserSession | None:
    """A restricted session added a sign-in method (the passkey ``credential_id``, if one): it
    becomes a full session under a new id (idp.services.sessions.SessionService.promote); this
    response carries the new cookie. None: the restricted session ended on the way, and no
    session is opened."""
    service = services().sessions
    new = service.promote(restricted, request_context(), clock().now(), credential_id=credential_id)
    if new is None:
        forget_session()
        return None
    g.idp_session = new.session

    @after_this_request
    def _set_cookie(response: Response) -> Response:
        set_session_cookie(response, new.cookie_value, service.cookie_lifetime(new.session))
        return response

    return new.session


def viewer_is_admin() -> bool:
    """The account pages link to the admin console for an admin with a full session (a
    restricted one may only add a way in; the console's own guard decides the rest)."""
    session = current_session()
    return session is not None and not session.restricted and session.user.is_admin


class CsrfCookieSessions(SecureCookieSessionInterface):
    """Flask's signed cookie session, which carries only Flask-WTF's CSRF token (the browser's
    sign-in session is ``idp_session`` above), without the work Flask's does for every request
    whether or not a form is involved: it built a new signing serializer per request and read
    seven cookie settings before finding there was nothing to save (docs/performance.md,
    "Before and after, per change"), and tried zlib on a value it cannot shorten
    (idp.web.csrf_signing). Same cookie, same signature, same settings."""

    def get_signing_serializer(self, app: Flask) -> UncompressedSerializer | None:
        # Made once per key set: the keys do not change while the application runs.
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        return kept_serializer(
            app, "idp.csrf_cookie_serializer", keys, lambda: self._serializer(*keys)
        )

    def _serializer(
        self, secret_key: str | bytes | None, fallbacks: tuple[str | bytes, ...]
    ) -> UncompressedSerializer | None:
        # Flask's own ``get_signing_serializer``, argument for argument: the current key last.
        if not secret_key:
            return None
        return UncompressedSerializer(
            [*fallbacks, secret_key],  # type: ignore[arg-type]  # as Flask's: str or bytes keys
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )

    def open_session(self, app: Flask, request: FlaskRequest) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SessionMixin, response: FlaskResponse) -> None:
        # Nothing read, nothing written: no cookie to set or clear, no Vary to add.
        if not session and not session.modified and not session.accessed:
            return
        super().save_session(app, session, response)


#: Stands for the Flask session of a request context until something reads it: a null session to
#: Flask (``push`` opens none, ``process_response`` saves none), told apart from a real one by
#: identity.
UNOPENED: SessionMixin = NullSession()


class LazySessionContext(RequestContext):
    """Flask's request context, which opens the signed cookie session when something first reads
    ``flask.session`` instead of at every ``push``. The cookie carries only the CSRF token, which
    a form page, a form post or a WebAuthn ceremony reads; a browser that kept the cookie sends it
    with every API call too (userinfo, the token endpoint), where verifying its signature cost a
    quarter of a request that touches nothing (docs/performance.md, "Before and after, per
    change"). The session is opened by the same ``open_session``, from the same cookie, with the
    same rules, so a form is checked exactly as before; an untouched session is saved by nobody,
    as before (``CsrfCookieSessions.save_session``)."""

    def __init__(
        self,
        app: Flask,
        environ: dict[str, object],
        request: FlaskRequest | None = None,
        session: SessionMixin | None = None,
    ) -> None:
        super().__init__(app, environ, request, UNOPENED if session is None else session)

    @property
    def session(self) -> SessionMixin:
        opened = self._opened()
        opened.accessed = True  # what Flask's property does on every read
        return opened

    def copy(self) -> RequestContext:
        # A copy (``stream_with_context``) shares this context's session, as Flask's does: opened
        # first, so that the two do not each open their own.
        self._opened()
        return super().copy()

    def _opened(self) -> SessionMixin:
        session = self._session
        if session is UNOPENED:
            interface = self.app.session_interface
            session = interface.open_session(self.app, self.request)
            if session is None:
                session = interface.make_null_session(self.app)
            self._session = session
        assert session is not None, "The session has not yet been opened."
        return session


#: The Flask session's key for a passkey the next sign-in page tells the browser to forget
#: (idp.login.page, WebAuthn L3 5.1.10 signalUnknownCredential).
FORGET_CREDENTIAL = "forget_credential"


def signed_out_with_removed_passkey(
    credential_id: str,
    message: str,
    next_path: str,
    *,
    login_hint: str | None = None,
    code: int = 302,
) -> Response:
    """The request's session ended with the passkey it removed, the one that signed it in
    (idp.services.sessions.end_passkey_sessions): forget it, say ``message``, and send the
    browser to sign in another way, its sign-in page told to stop offering that passkey."""
    forget_session()
    flask_session[FORGET_CREDENTIAL] = credential_id  # not offered by the page's autofill
    flash(message, "info")
    response = redirect(url_for("login.login", login_hint=login_hint, next=next_path), code=code)
    clear_session_cookie(response)
    return response
