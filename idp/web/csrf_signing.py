"""The two signed values behind Flask-WTF's CSRF protection (docs/security.md): the cookie session
that keeps the raw token, and the token a form or a page's meta tag carries. Both are itsdangerous'
URL-safe timed serializer, whose ``dump_payload`` tries zlib on every value and keeps the result
only when it is shorter. Neither value ever is: the session is
``{"csrf_token": "<40 hex digits>"}`` and the token signs the same 40 random hex digits (the shape
of Flask-WTF's own), which deflate cannot shorten by the two bytes that would pay for the marker.
The attempt still costs about 20 µs a value, most of it setting up deflate's state (some 256 KiB
allocated, its 64 KiB hash table zeroed at every call) and none of it the request's
(docs/performance-rounds.md, "The twenty-seventh round"). A sign-in page makes both values, so
this module signs them without the attempt: the same bytes, the same keys and salts, and what is
read back is read by itsdangerous and Flask-WTF as before (a compressed value, should one have
been made, still loads)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, session
from itsdangerous import URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.url_safe import URLSafeSerializerMixin

#: Flask-WTF's salt for the token (``flask_wtf.csrf.generate_csrf`` and ``validate_csrf``).
CSRF_TOKEN_SALT = "wtf-csrf-token"


class UncompressedSerializer(URLSafeTimedSerializer):
    """``URLSafeTimedSerializer`` whose dump is the base64 of the JSON, never zlib's: what the
    parent makes for any value that deflate does not shorten, as the CSRF values above."""

    def dump_payload(self, obj: Any) -> bytes:
        # The mixin's own dump compresses; the serializer's below it makes the JSON.
        return base64_encode(super(URLSafeSerializerMixin, self).dump_payload(obj))


def csrf_token() -> str:
    """Flask-WTF's ``generate_csrf`` for idp's pages (the ``csrf_token()`` of the templates):
    the raw token kept in the cookie session, 160 random bits made when there is none (Flask-WTF
    makes them as a SHA-1 digest of random bytes, the same 40 hex digits), signed once per request
    with Flask-WTF's secret and salt, so that Flask-WTF's ``validate_csrf`` checks it as its own.
    The serializer is made once per secret key instead of on every call."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    field_name = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    signed: str | None = g.get(field_name)
    if signed is None:
        if field_name not in session:
            session[field_name] = secrets.token_hex(20)
        signed = _token_serializer(app).dumps(session[field_name])
        setattr(g, field_name, signed)
    return signed


def _token_serializer(app: Flask) -> UncompressedSerializer:
    # Read as Flask-WTF reads them (``flask_wtf.csrf._get_config``), so that its check agrees.
    secret_key = app.config.get("WTF_CSRF_SECRET_KEY", app.secret_key)
    if secret_key is None:
        raise RuntimeError("A secret key is required to use CSRF.")
    serializer = kept_serializer(
        app, "idp.csrf_token_serializer", secret_key,
        lambda: UncompressedSerializer(secret_key, salt=CSRF_TOKEN_SALT),
    )  # fmt: skip
    assert serializer is not None
    return serializer


def kept_serializer(
    app: Flask, name: str, keys: object, make: Callable[[], UncompressedSerializer | None]
) -> UncompressedSerializer | None:
    """The serializer ``make`` builds, kept in ``app.extensions[name]`` for as long as its
    ``keys`` stay the same (they do while the application runs) instead of built per request."""
    kept = app.extensions.get(name)
    if kept is None or kept[0] != keys:
        kept = app.extensions[name] = (keys, make())
    serializer: UncompressedSerializer | None = kept[1]
    return serializer
