"""Security headers on every response: the Content Security Policy with its per-request nonce,
no framing, no referrer (CSP Level 3), HSTS over https (RFC 6797).

Two layers, so that an answer without a page pays almost nothing for them (docs/performance.md,
"Before and after, per change"): ``ResponseHeaders`` wraps the WSGI application and appends the
headers that never change to every response's plain header list, once the status is known; the
Flask hook ``add_security_headers`` only writes the policy of a page that rendered a script nonce.
A header a view set itself is never overwritten (the consent page widens ``img-src`` for a
client's logo)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import g
from werkzeug.wrappers import Response

from idp.observability import REQUEST_ID_HEADER, RESPONSE_REQUEST_ID
from idp.services.host_names import ascii_host

#: One year, in seconds: the least RFC 6797 deployments (and browsers' preload lists) expect.
HSTS_MAX_AGE = 365 * 24 * 3600


def content_security_policy(nonce: str | None) -> str:
    # CSP 3: 'none' must stand alone; a page that rendered no script nonce runs no script.
    script_src = f"'nonce-{nonce}' 'strict-dynamic'" if nonce else "'none'"
    return (
        f"default-src 'self'; script-src {script_src}; style-src 'self'; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def allow_logo(response: Response, logo_origin: str | None) -> Response:
    """A page that shows a client's logo (OIDC Registration 2 ``logo_uri``: the consent page,
    the device review, where users decide whether to trust the app) lets the browser load it:
    the logo's origin, and only it, joins the policy's image sources. The logo is the one image
    from elsewhere; without a logo the policy stays as it is."""
    if logo_origin:
        policy = content_security_policy(g.get("csp_nonce"))
        response.headers["Content-Security-Policy"] = policy.replace(
            "img-src 'self' data:", f"img-src 'self' data: {logo_origin}", 1
        )
    return response


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    nonce: str = g.csp_nonce
    return nonce


def add_security_headers(response: Response) -> Response:
    """The policy of a page that rendered a script nonce (its scripts run, nothing else does);
    every other header, and the policy of an answer without a nonce, is ``ResponseHeaders``'."""
    nonce = g.get("csp_nonce")
    if nonce and "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = content_security_policy(nonce)
    return response


#: The full stop and those UTS 46 maps to it (ideographic, full-width, half-width ideographic).
FULL_STOPS = (".", "\u3002", "\uff0e", "\uff61")


def a_label_location(response: Response) -> Response:
    """A ``Location`` whose host is an internationalised name (a client's redirect URI, an
    authorization or logout response's) names it by the A-labels a browser would go to (IDNA 2008,
    idp.services.host_names.ascii_host). Werkzeug turns a Unicode host in ``Location`` into
    ASCII by Python's IDNA 2003 codec, which sent ``faß.example``'s authorization code to
    ``fass.example``, another name and maybe another owner's. Any other ``Location`` is left as
    it is: ASCII only costs the one check."""
    location = response.headers.get("Location")
    if not location or location.isascii():
        return response
    try:
        parts = urlsplit(location)
        host, port = parts.hostname, parts.port
    except ValueError:
        return response
    if not host or host.isascii():
        return response
    # A trailing dot (or one UTS 46 maps to it) is kept: for a browser ``app.example.`` is
    # another origin than ``app.example``.
    a_labels = ascii_host(host, strict=False) + ("." if host.endswith(FULL_STOPS) else "")
    if a_labels.isascii():
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = userinfo + at + a_labels + (f":{port}" if port is not None else "")
        response.headers["Location"] = urlunsplit(parts._replace(netloc=netloc))
    return response


StartResponse = Callable[..., Any]


class ResponseHeaders:
    """WSGI middleware: the fixed security headers on every response (docs/architecture.md,
    "Invariants, and where each is kept"), errors and static files included, each only where the
    application did not set it; and the request's id (idp.observability) in ``X-Request-Id``."""

    def __init__(
        self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]],
        *, secure_transport: bool, hsts_include_subdomains: bool,
    ) -> None:  # fmt: skip
        self.app = app
        fixed = [
            ("Content-Security-Policy", content_security_policy(None)),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
        if secure_transport:
            # RFC 6797 6.1: browsers come back over https only, for a year; never announced for
            # an http issuer (7.2: an HSTS header over plain http is ignored, and localhost stays
            # http).
            hsts = f"max-age={HSTS_MAX_AGE}"
            if hsts_include_subdomains:
                hsts += "; includeSubDomains"
            fixed.append(("Strict-Transport-Security", hsts))
        self.fixed = tuple((name.lower(), (name, value)) for name, value in fixed)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        fixed = self.fixed

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower(): value for name, value in headers}
            headers.extend(header for lower, header in fixed if lower not in present)
            # No answer is stored unless its view says how (discovery, the JWKS, static files):
            # a page may show an account or carry a one-time form token, and a JSON answer may
            # carry backup codes (the first passkey's) or an authorization code (a passkey
            # sign-in's redirect) as much as a page does (OWASP ASVS 4.0 8.2.1).
            if "cache-control" not in present:
                headers.append(("Cache-Control", "no-store"))
            request_id = environ.get(RESPONSE_REQUEST_ID)
            if request_id:
                headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
