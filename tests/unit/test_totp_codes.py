"""The authenticator app's codes computed in idp.services.totp (RFC 4226 5.3, RFC 6238 4.2):
RFC 6238's own test vectors, and the same codes as pyotp for random keys and steps."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

import pyotp
import pytest

from idp.services.totp import STEP_SECONDS, _key, _matching_step, code_at

#: RFC 6238 Appendix B, HMAC-SHA-1 (the seed "12345678901234567890"): Unix time and the
#: 8-digit code, of which an app showing 6 digits shows the last 6.
RFC_6238_SHA1 = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("at", "code"), RFC_6238_SHA1)
def test_rfc_6238_vectors(at: int, code: str) -> None:
    key = b"12345678901234567890"
    assert code_at(key, at // STEP_SECONDS) == code[-6:]


def test_the_same_codes_as_pyotp() -> None:
    for _ in range(200):
        secret = pyotp.random_base32(length=32)
        step = secrets.randbelow(2**40)
        assert code_at(_key(secret), step) == pyotp.TOTP(secret).generate_otp(step)


def test_keys_decoded_as_pyotp_decodes_them() -> None:
    secret = pyotp.random_base32(length=32)
    assert _key(secret.lower()) == pyotp.TOTP(secret).byte_secret()
    unpadded = base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=")  # 26 of 32
    assert _key(unpadded) == pyotp.TOTP(unpadded).byte_secret()
    with pytest.raises(ValueError, match="112 bits"):
        _key(base64.b32encode(b"short").decode())  # 40 bits: below pyotp's floor too


def test_current_and_previous_step_only() -> None:
    secret = pyotp.random_base32(length=32)
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    assert _matching_step(secret, totp.at(now), now) == current
    assert _matching_step(secret, totp.at(now.timestamp() - STEP_SECONDS), now) == current - 1
    assert _matching_step(secret, totp.at(now.timestamp() - 2 * STEP_SECONDS), now) is None
    assert _matching_step(secret, totp.at(now.timestamp() + STEP_SECONDS), now) is None
    spaced = totp.at(now)[:3] + " " + totp.at(now)[3:]
    assert _matching_step(secret, spaced, now) == current
