"""A client's DPoP key and the proofs it signs (RFC 9449 4.2), correct unless told otherwise."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

TOKEN_URL = "http://localhost/token"
USERINFO_URL = "http://localhost/userinfo"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath(access_token: str) -> str:
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


class DPoPKey:
    """A key pair a client keeps for DPoP; ``alg`` one of ES256, RS256, PS256, EdDSA."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        if alg == "ES256":
            self.key: Any = ECKey.generate_key("P-256")
        elif alg == "EdDSA":
            self.key = OKPKey.generate_key("Ed25519")
        else:
            self.key = RSAKey.generate_key(2048)

    @property
    def jkt(self) -> str:
        return str(self.key.thumbprint())

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    def proof(
        self, method: str = "POST", url: str = TOKEN_URL, *, access_token: str | None = None,
        header: dict[str, Any] | None = None, claims: dict[str, Any] | None = None,
        iat: int | None = None,
    ) -> str:  # fmt: skip
        """A proof for ``method`` ``url`` now (``iat``: another time), the ``ath`` of
        ``access_token`` if given; ``header`` and ``claims`` replace or add members (a member
        whose value is None is left out)."""
        protected: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk()}
        payload: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
            "iat": int(time.time()) if iat is None else iat,
        }  # fmt: skip
        if access_token is not None:
            payload["ath"] = ath(access_token)
        protected.update(header or {})
        payload.update(claims or {})
        protected = {k: v for k, v in protected.items() if v is not None}
        payload = {k: v for k, v in payload.items() if v is not None}
        body = json.dumps(payload).encode()
        return str(jws.serialize_compact(protected, body, self.key, algorithms=[protected["alg"]]))
