"""Request-level helpers shared by the blueprints: the session cookie, request context, headers."""

from __future__ import annotations

import functools
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, after_this_request, current_app, g, render_template, request
from markupsafe import Markup
from werkzeug.wrappers import Response

from idp.composition import clock, request_context, runtime, services
from idp.extensions import db
from idp.models import BrowserSession, OutboxMessage, User
from idp.services.notifications import Mailer, describe_message, terminal_text
from idp.services.outbox import Channel, deliver, take_committed
from idp.services.retention import (
    OPPORTUNISTIC_BATCHES,
    claim_run,
    prune,
)
from idp.services.user_admin import link_path
from idp.settings import is_loopback_host


def session_cookie_name() -> str:
    # RFC 6265bis 4.1.3.2: a __Host- cookie is Secure, host-only and Path=/. Over plain http
    # (localhost development) Secure cookies are not sent back by every client, so no prefix.
    return "__Host-idp_session" if runtime().settings.secure_transport else "idp_session"


def current_session() -> BrowserSession | None:
    """The live browser session of this request, loaded once."""
    if "idp_session" not in g:
        g.idp_session = services().sessions.load(
            request.cookies.get(session_cookie_name()), clock().now()
        )
    session: BrowserSession | None = g.idp_session
    return session


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


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    nonce: str = g.csp_nonce
    return nonce


#: One year, in seconds: the least RFC 6797 deployments (and browsers' preload lists) expect.
HSTS_MAX_AGE = 365 * 24 * 3600


def add_security_headers(response: Response) -> Response:
    """CSP with nonces, no framing, no referrer (the design invariants)."""
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
    settings = runtime().settings
    if settings.secure_transport:
        # RFC 6797 6.1: browsers come back over https only, for a year; never announced for an
        # http issuer (7.2: an HSTS header over plain http is ignored, and localhost stays http).
        hsts = f"max-age={HSTS_MAX_AGE}"
        if settings.hsts_include_subdomains:
            hsts += "; includeSubDomains"
        response.headers.setdefault("Strict-Transport-Security", hsts)
    if response.mimetype == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def acts_on_get(view: Callable[..., Any]) -> Callable[..., Any]:
    """For the protocol endpoints whose GET acts: the authorization endpoint issues codes and
    stores pending requests (OIDC Core 3.1.2.1), RP-initiated logout ends sessions
    (RP-Initiated Logout 1.0 section 2). HEAD must change nothing (RFC 9110 9.2.1), and such a
    GET's headers (a Location with a code) cannot be produced without acting: HEAD is refused
    (RFC 9110 15.5.6), the view never runs."""

    @functools.wraps(view)
    def refuse_head(*args: Any, **kwargs: Any) -> Any:
        if request.method == "HEAD":
            rule = request.url_rule
            allowed = sorted((rule.methods or set()) - {"HEAD"}) if rule is not None else []
            return Response(status=405, headers={"Allow": ", ".join(allowed)})
        return view(*args, **kwargs)

    return refuse_head


def confirmed() -> bool:
    """A destructive action acts only on a POST carrying ``confirm=yes``, the button of its
    confirmation page; a GET (RFC 9110 9.2.1: safe) or a bare POST gets that page instead. One
    pattern for every such action, and it works without JavaScript."""
    return request.method == "POST" and request.form.get("confirm") == "yes"


def confirm_page(
    *, title: str, message: str, action: str, button: str, cancel: str, nav: str = "account"
) -> Any:
    """The confirmation page of a destructive action: what will happen, the button that does it
    (a POST to ``action`` with ``confirm=yes``) and a way back."""
    return render_template("confirm.html", title=title, message=message, action=action,
                           button=button, cancel=cancel, nav=nav)  # fmt: skip


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


def start_session(
    user: User,
    amr: list[str] | tuple[str, ...],
    response: Response,
    *,
    restricted: bool = False,
    passkey_only: bool = False,
) -> None:
    """Sign the user in: a new server-side session, the previous one of this browser ended.
    ``restricted``: its only way forward is adding a sign-in method (a passkey alone with
    ``passkey_only``)."""
    previous = current_session()
    now = clock().now()
    service = services().sessions
    if previous is not None:
        service.revoke(previous, now)
    new = service.create(user, list(amr), request_context(), now, restricted=restricted,
                         passkey_only=passkey_only)  # fmt: skip
    g.idp_session = new.session
    set_session_cookie(response, new.cookie_value, service.cookie_lifetime(new.session))


def promote_session(restricted: BrowserSession) -> BrowserSession:
    """A restricted session added a sign-in method: it becomes a full session under a new id
    (idp.services.sessions.SessionService.promote); this response carries the new cookie."""
    service = services().sessions
    new = service.promote(restricted, request_context(), clock().now())
    g.idp_session = new.session

    @after_this_request
    def _set_cookie(response: Response) -> Response:
        set_session_cookie(response, new.cookie_value, service.cookie_lifetime(new.session))
        return response

    return new.session


def email_key(email: str) -> str:
    """A rate-limit subject for an email, known account or not (no enumeration)."""
    return runtime().email_key(email)


def url_for_secret(purpose: str, secret: str) -> str:
    """The absolute address of a one-time link (login link, invite) for ``secret``."""
    return runtime().settings.endpoint(link_path(purpose, secret))


def issuer_address() -> dict[str, str]:
    """Template values for a page opened at another address than a development issuer's (say
    http://127.0.0.1:5000 for http://localhost:5000): passkeys fail there, since the browser
    checks the page's origin against the RP ID (WebAuthn L3 5.1.3, a domain, never an IP
    address) and idp checks it against the issuer's origin (7.1 step 9), and every cookie is
    the issuer's host's. ``issuer_url``: the same page at the issuer, for the banner in
    base.html. Development only: behind a production proxy the Host header idp sees may
    legitimately differ from the issuer's."""
    settings = runtime().settings
    parts = urlsplit(settings.issuer)
    if parts.scheme != "http" or not is_loopback_host(parts.hostname or ""):
        return {}
    if request.host.lower() == parts.netloc.lower():
        return {}
    path = request.full_path if request.query_string else request.path
    return {"issuer_url": settings.issuer.rstrip("/") + path, "issuer_origin": settings.issuer}


def outbox_channels() -> list[Channel]:
    """For idp/cli.py, until the command line asks idp.composition for its services."""
    return services().outbox_channels()


def schedule_outbox(response: Response) -> Response:
    """Deliver what this request committed to the outbox once the response is sent, so that no
    user waits for SMTP or a relying party (idp.services.outbox): mail when the response closes;
    back-channel logout tokens on the node's delivery thread (``OutboxWorker``), so that a
    relying party that hangs holds no request worker either."""
    committed = take_committed(db.session())
    mail_ids = committed.pop(Mailer.name, [])
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if mail_ids and services().mailer is not None:
        response.call_on_close(lambda: deliver_committed(app, mail_ids))
    elif mail_ids and runtime().settings.prints_mail:
        # Development without SMTP: the terminal is where the mail goes (docs/operations.md).
        response.call_on_close(lambda: print_committed(app, mail_ids))
    others = [row_id for ids in committed.values() for row_id in ids]
    if others:
        outbox_worker(app).submit(others)
    return response


def print_committed(app: Flask, ids: list[int]) -> None:
    """Development without SMTP: print the messages ``ids`` (links included) on the server's
    terminal, where the developer who runs it reads them; never raises."""
    with app.app_context():
        try:
            rows = [db.session.get(OutboxMessage, message_id) for message_id in ids]
            text = "\n".join(terminal_text(describe_message(m)) for m in rows if m is not None)
            db.session.rollback()
            if text:
                print(text, flush=True)  # the terminal is where the mail goes
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("printing notifications failed")
        finally:
            db.session.remove()


def viewer_is_admin() -> bool:
    """The account pages link to the admin console for an admin with a full session (a
    restricted one may only add a way in; the console's own guard decides the rest)."""
    session = current_session()
    return session is not None and not session.restricted and session.user.is_admin


def docs_link(name: str) -> str | None:
    """The address of ``docs/<name>`` under the ``docs_url`` setting, or None when unset (the
    console then names the file of the repository's docs/ directory)."""
    docs_url = runtime().settings.docs_url
    return f"{docs_url.rstrip('/')}/{name}" if docs_url else None


def outbox_hint() -> Markup | None:
    """What a page says instead of "we emailed it" when no message can leave idp (no
    ``smtp_url``): where the administrator finds it. None when a mail server is configured."""
    settings = runtime().settings
    if settings.smtp_url:
        return None
    where = "printed in the terminal running idp and " if settings.prints_mail else ""
    return Markup(
        "No mail server is configured (<code>smtp_url</code>), so no email went out: the "
        "message waits in idp's outbox, {}listed by <code>idp outbox</code>."
    ).format(where)


def deliver_committed(app: Flask, ids: list[int]) -> int:
    """Deliver ``ids`` in a fresh application context; never raises."""
    with app.app_context():
        try:
            return deliver(db.session(), services().outbox_channels(), ids, clock().now())
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("delivering the outbox failed")
            return 0
        finally:
            db.session.remove()


class OutboxWorker:
    """This process's delivery thread: takes lists of outbox ids and delivers them, one list
    after the other, off every request. Started on first use, and again in a forked worker
    process (a thread does not survive ``fork``)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.queue: queue.Queue[list[int]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, ids: list[int]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="idp-outbox", daemon=True)
                self._thread.start()
        self.queue.put(ids)

    def _run(self) -> None:
        while True:
            ids = self.queue.get()
            try:
                deliver_committed(self.app, ids)
            finally:
                self.queue.task_done()

    def drain(self) -> None:
        """Wait until every submitted list was attempted (tests; a graceful stop)."""
        self.queue.join()


def outbox_worker(app: Flask) -> OutboxWorker:
    worker = app.extensions.get("idp.outbox_worker")
    if not isinstance(worker, OutboxWorker):
        worker = app.extensions.setdefault("idp.outbox_worker", OutboxWorker(app))
    return worker


def deliver_left_over() -> None:
    """At the end of an application context without a response (the CLI): deliver what it
    committed, now that its transactions are over."""
    committed = take_committed(db.session())
    ids = [row_id for channel_ids in committed.values() for row_id in channel_ids]
    if ids:
        db.session.rollback()  # whatever was left uncommitted is not the outbox's to commit
        try:
            deliver(db.session(), services().outbox_channels(), ids, clock().now())
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("delivering the outbox failed")


def schedule_prune(response: Response) -> Response:
    """Opportunistic pruning (idp.services.retention): at most once per ``prune_interval`` per
    node, after the response has been sent, so that no request waits for it."""
    if runtime().prune_schedule.due():
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        response.call_on_close(lambda: prune_if_claimed(app))
    return response


def prune_if_claimed(app: Flask) -> dict[str, int] | None:
    """Prune a bounded amount if this node wins this interval's claim; never raises."""
    with app.app_context():
        try:
            schedule = runtime().prune_schedule
            now = clock().now()
            if not claim_run(db.session(), now, schedule.claim_interval()):
                return None
            built = services()
            counts = prune(db.session(), built.retention(now), max_batches=OPPORTUNISTIC_BATCHES,
                           channels=built.outbox_channels())  # fmt: skip
            schedule.after_run(counts)
        except Exception:
            db.session.rollback()
            logging.getLogger(__name__).exception("opportunistic prune failed")
            return None
        finally:
            db.session.remove()
        # "3 access_tokens", not "access_tokens: 3": the log redaction masks values whose key
        # names a secret, and a count is none.
        pruned = ", ".join(f"{count} {table}" for table, count in counts.items() if count)
        # A prune that found nothing is worth a line only at DEBUG (a quiet terminal).
        level = logging.INFO if pruned else logging.DEBUG
        logging.getLogger(__name__).log(level, "pruned expired rows: %s", pruned or "none")
        return counts
