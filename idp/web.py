"""Request-level helpers shared by the blueprints: the session cookie, request context, headers."""

from __future__ import annotations

import secrets

from flask import current_app, g, request
from werkzeug.wrappers import Response

from idp.extensions import db
from idp.models import BrowserSession, User
from idp.models.base import utcnow
from idp.runtime import Runtime
from idp.services.audit import RequestContext
from idp.services.backup_codes import BackupCodeService
from idp.services.notifications import Notifier
from idp.services.passkeys import PasskeyService, RelyingParty
from idp.services.rate_limits import (
    AttemptLimiter,
    CounterStore,
    DatabaseCounters,
    RedisCounters,
)
from idp.services.sessions import SessionService
from idp.services.totp import TotpService
from idp.services.users import normalise_email


def runtime() -> Runtime:
    value = current_app.extensions["idp"]
    assert isinstance(value, Runtime)
    return value


def session_cookie_name() -> str:
    # RFC 6265bis 4.1.3.2: a __Host- cookie is Secure, host-only and Path=/. Over plain http
    # (localhost development) Secure cookies are not sent back by every client, so no prefix.
    return "__Host-idp_session" if runtime().settings.secure_transport else "idp_session"


def session_service() -> SessionService:
    settings = runtime().settings
    return SessionService(
        db.session(), idle_ttl=settings.session_idle_ttl, absolute_ttl=settings.session_absolute_ttl
    )


def current_session() -> BrowserSession | None:
    """The live browser session of this request, loaded once."""
    if "idp_session" not in g:
        g.idp_session = session_service().load(request.cookies.get(session_cookie_name()), utcnow())
    session: BrowserSession | None = g.idp_session
    return session


def set_session_cookie(response: Response, value: str) -> None:
    settings = runtime().settings
    response.set_cookie(
        session_cookie_name(),
        value,
        max_age=settings.session_absolute_ttl,
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


def request_context() -> RequestContext:
    return RequestContext(
        ip_address=request.remote_addr or "", user_agent=request.headers.get("User-Agent", "")
    )


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    nonce: str = g.csp_nonce
    return nonce


def add_security_headers(response: Response) -> Response:
    """CSP with nonces, no framing, no referrer (DESIGN.md invariants)."""
    nonce = g.get("csp_nonce")
    # CSP 3: 'none' must stand alone; a page that rendered no script nonce runs no script.
    script_src = f"'nonce-{nonce}' 'strict-dynamic'" if nonce else "'none'"
    response.headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'self'; script-src {script_src}; style-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def browser_binding() -> str:
    """A random value in this browser's signed cookie: WebAuthn challenges are bound to it so that
    a challenge issued to one browser cannot be answered from another."""
    from flask import session

    value = session.get("webauthn_binding")
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session["webauthn_binding"] = value
    return value


def safe_next(target: str | None) -> str | None:
    """A local path to return to after sign-in, or None: never an open redirect (RFC 9700 4.11)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x20 for c in target) or len(target) > 2000:
        return None
    return target


def passkey_service() -> PasskeyService:
    settings = runtime().settings
    rp = RelyingParty(rp_id=settings.rp_id, rp_name=settings.webauthn_rp_name,
                      origins=settings.origins)  # fmt: skip
    return PasskeyService(db.session(), rp, settings.secret_key)


def start_session(
    user: User, amr: list[str] | tuple[str, ...], response: Response, *, restricted: bool = False
) -> None:
    """Sign the user in: a new server-side session, the previous one of this browser ended."""
    previous = current_session()
    now = utcnow()
    if previous is not None:
        session_service().revoke(previous, now)
    new = session_service().create(user, list(amr), request_context(), now)
    new.session.restricted = restricted
    g.idp_session = new.session
    set_session_cookie(response, new.cookie_value)


def attempt_limiter() -> AttemptLimiter:
    """Failure counters in Redis when configured (shared by every node), else in the database."""
    redis = runtime().redis
    store: CounterStore = (
        RedisCounters(redis) if redis is not None else DatabaseCounters(db.session())
    )
    return AttemptLimiter(store)


def email_key(email: str) -> str:
    """A rate-limit subject for an email, known account or not (no enumeration)."""
    return runtime().attempt_key_hasher.hash(normalise_email(email))[:32]


def totp_service() -> TotpService:
    return TotpService(db.session(), runtime().totp_fernet, runtime().settings.webauthn_rp_name)


def backup_code_service() -> BackupCodeService:
    return BackupCodeService(db.session(), runtime().backup_code_hasher)


def notifier() -> Notifier:
    settings = runtime().settings
    return Notifier(db.session(), settings.smtp_url, settings.smtp_sender)
