"""Helpers the blueprints share: confirmation pages, safe redirects, one-time link addresses,
template values. The browser session, security headers and after-response work have their own
modules beside this one (idp.web.sessions, idp.web.headers, idp.web.background)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import current_app, has_request_context, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from idp.composition import runtime
from idp.services.login_links import link_path
from idp.settings import is_loopback_host


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


def safe_next(target: str | None) -> str | None:
    """A local path to return to after sign-in, or None: never an open redirect (RFC 9700 4.11)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x20 for c in target) or len(target) > 2000:
        return None
    return target


def login_url(next_path: str) -> str:
    """The sign-in page, coming back to ``next_path`` afterwards. A path ``safe_next`` would not
    follow (a junk query string past its length bound, say) is not carried: the sign-in page
    would drop it anyway, and a redirect must not echo 100 KB of someone's query string."""
    return url_for("login.login", next=safe_next(next_path))


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


#: At most this many (script root, endpoint, file) addresses remembered per application: the
#: pages name a handful of files and endpoints, and a deployment serves under one script root.
URLS_KEPT = 64


def static_url(filename: str) -> str:
    """``url_for("static", filename=...)`` for a page's style sheet, icon and scripts, built once
    per application, script root and file instead of by the URL map at every render
    (docs/performance.md)."""
    return _kept_url("static", filename)


def page_url(endpoint: str) -> str:
    """``url_for(endpoint)`` of an endpoint that takes no values (a form's action, a link, a
    redirect's target: ``"login.second_step"``, never a blueprint-relative ``".name"``), built
    once per application and script root like ``static_url``."""
    return _kept_url(endpoint, None)


def _kept_url(endpoint: str, filename: str | None) -> str:
    # Within a request the address is the script root's path to the rule, whatever else the
    # request carries (no URL defaults, subdomains or host matching here); outside one (no
    # script root), url_for as before.
    if not has_request_context():
        return url_for(endpoint) if filename is None else url_for(endpoint, filename=filename)
    known: dict[tuple[str, str, str | None], str]
    known = current_app.extensions.setdefault("idp.kept_urls", {})
    key = (request.script_root, endpoint, filename)
    url = known.get(key)
    if url is None:
        if len(known) >= URLS_KEPT:
            known.clear()
        built = url_for(endpoint) if filename is None else url_for(endpoint, filename=filename)
        url = known[key] = built
    return url


#: How much of a moment the pages show (the admin console and the portal say UTC once a time of
#: day is shown).
_WHEN_FORMATS = {
    "day": "%Y-%m-%d",
    "minute": "%Y-%m-%d %H:%M UTC",
    "second": "%Y-%m-%d %H:%M:%S UTC",
}


def when(moment: datetime, precision: str = "minute") -> Markup:
    """A moment as an HTML ``<time>`` element (HTML Living Standard 4.5.14): the machine-readable
    instant in its ``datetime`` attribute, the shown text kept on one line by the style sheet, so
    that a narrow screen never breaks a date at its hyphens."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    instant = moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return Markup('<time datetime="{}">{}</time>').format(
        instant, moment.strftime(_WHEN_FORMATS[precision])
    )
