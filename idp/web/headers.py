"""Security headers on every response: the Content Security Policy with its per-request nonce,
no framing, no referrer (CSP Level 3), HSTS over https (RFC 6797)."""

from __future__ import annotations

import secrets

from flask import g
from werkzeug.wrappers import Response

from idp.composition import runtime


def csp_nonce() -> str:
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    nonce: str = g.csp_nonce
    return nonce


#: One year, in seconds: the least RFC 6797 deployments (and browsers' preload lists) expect.
HSTS_MAX_AGE = 365 * 24 * 3600


def add_security_headers(response: Response) -> Response:
    """CSP with nonces, no framing, no referrer (docs/architecture.md, "Invariants, and where
    each is kept")."""
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
