"""idp.web.csrf_signing: the CSRF values signed without itsdangerous' zlib attempt are the bytes
itsdangerous makes for them, and a compressed value still loads."""

from __future__ import annotations

import secrets

from itsdangerous import URLSafeTimedSerializer

from idp.web.csrf_signing import CSRF_TOKEN_SALT, UncompressedSerializer


def test_the_csrf_values_are_the_bytes_itsdangerous_makes_for_them() -> None:
    key = secrets.token_urlsafe(32)
    ours = UncompressedSerializer(key, salt=CSRF_TOKEN_SALT)
    theirs = URLSafeTimedSerializer(key, salt=CSRF_TOKEN_SALT)
    for _ in range(2000):
        raw = secrets.token_hex(20)
        for value in (raw, {"csrf_token": raw}):
            assert ours.dump_payload(value) == theirs.dump_payload(value)


def test_a_value_itsdangerous_compressed_still_loads() -> None:
    key = secrets.token_urlsafe(32)
    compressible = {"csrf_token": "a" * 200}
    signed = URLSafeTimedSerializer(key, salt=CSRF_TOKEN_SALT).dumps(compressible)
    assert signed.startswith(".")  # itsdangerous' mark of a compressed payload
    assert UncompressedSerializer(key, salt=CSRF_TOKEN_SALT).loads(signed) == compressible


def test_a_value_deflate_would_shorten_is_signed_uncompressed() -> None:
    key = secrets.token_urlsafe(32)
    ours = UncompressedSerializer(key, salt=CSRF_TOKEN_SALT)
    signed = ours.dumps({"csrf_token": "a" * 200})
    assert not signed.startswith(".")
    assert ours.loads(signed) == {"csrf_token": "a" * 200}
