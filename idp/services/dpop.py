"""DPoP (RFC 9449): the checks of a proof, the thumbprint of its key, and the record of its use.

A client that holds a key pair sends, with each token request and each request to a protected
resource, a ``DPoP`` header: a JWT it signed with that key, naming the request (``htm``,
``htu``), the moment (``iat``), a one-time ``jti`` and, at a resource, the hash of the access
token (``ath``). The token endpoint binds what it issues to the key's RFC 7638 thumbprint
(``cnf.jkt``, RFC 9449 6), so that a stolen token is useless without the private key.

``check_proof`` makes every check of RFC 9449 4.3 but the ``jti``'s: whether a proof was seen
before is the database's answer (``remember_proof``: one conditional INSERT whose row count
decides, so that of parallel requests on any node carrying the same proof exactly one passes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry
from sqlalchemy import Table

from idp.errors import DomainError
from idp.models import UsedDPoPProof
from idp.services.crypto import token_hash
from idp.thin_statements import insert_unless_exists

#: RFC 9449 4.2: the proof's explicit type.
DPOP_TYP = "dpop+jwt"
#: RFC 9449 4.2 and 5.1: asymmetric algorithms only (never ``none``, never a MAC), each with the
#: key type it signs with. Advertised as ``dpop_signing_alg_values_supported``.
DPOP_ALGS: Mapping[str, str] = {"ES256": "EC", "RS256": "RSA", "PS256": "RSA", "EdDSA": "OKP"}
#: RFC 9449 7.1: the DPoP challenge of a protected resource, naming the algorithms (``algs``).
#: The UserInfo endpoint also takes bearer tokens, and sends it beside each Bearer challenge
#: (7.2, RFC 9110 11.6.1): a client that reads only Bearer would not learn it may use DPoP.
DPOP_CHALLENGE = f'DPoP algs="{" ".join(DPOP_ALGS)}"'
#: RFC 9449 4.3 item 11 and 11.1: how old a proof's ``iat`` may be, in seconds. Its ``jti`` is
#: remembered as long (``remember_proof``), so the window also bounds the replay store.
PROOF_WINDOW = 300
#: How far ahead of idp's clock a client's ``iat`` may read (clock skew, RFC 9449 11.1).
PROOF_AHEAD = 60
#: A proof carries its public key: an RSA-4096 key and the claims fit well within this.
MAX_PROOF_LENGTH = 8192
MAX_JTI_LENGTH = 256
#: RFC 7517 / 7518 6.2.2, 6.3.2, 8037 2: members that only a private (or symmetric) key has.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: RFC 8037 3.1: the curves EdDSA signs with.
EDDSA_CURVES = frozenset({"Ed25519", "Ed448"})


class _ProofRegistry(jws.JWSRegistry):
    #: joserfc's default (512 bytes) is too small for a header carrying an RSA key (RFC 9449 4.2
    #: ``jwk``); the whole proof stays bounded by ``MAX_PROOF_LENGTH``.
    max_header_length = MAX_PROOF_LENGTH


#: The proofs' JWS registry: the supported algorithms only (RFC 9449 4.3 item 5).
_REGISTRY = _ProofRegistry(algorithms=list(DPOP_ALGS))


class DPoPProofError(DomainError):
    """The proof is refused (RFC 9449 5 and 7.1: ``invalid_dpop_proof``)."""


class DPoPNonceError(DPoPProofError):
    """The proof lacks a nonce idp gave, or its nonce is stale (RFC 9449 8: ``use_dpop_nonce``,
    answered with a fresh ``DPoP-Nonce``)."""


#: RFC 9449 8: how long a nonce idp gave is accepted, in seconds.
NONCE_LIFETIME = 300


def new_nonce(key: bytes, now: datetime) -> str:
    """A server nonce (RFC 9449 8): the time it was made and a MAC of it under ``key``, so that
    every node accepts another's without storing any (the proof's ``jti`` stops a replay)."""
    return _nonce(key, int(now.timestamp()))


def _nonce(key: bytes, made: int) -> str:
    mac = hmac.new(key, f"dpop-nonce.{made}".encode(), hashlib.sha256).digest()[:16]
    return f"{made}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode('ascii')}"


def nonce_accepted(key: bytes, nonce: object, now: datetime) -> bool:
    """Whether ``nonce`` is one ``new_nonce`` made under ``key`` at most ``NONCE_LIFETIME`` ago
    (a node a little ahead of this one may have made it: ``PROOF_AHEAD``)."""
    if not isinstance(nonce, str) or len(nonce) > 64:
        return False
    made, _, _ = nonce.partition(".")
    if not made.isdigit() or not hmac.compare_digest(_nonce(key, int(made)), nonce):
        return False
    age = int(now.timestamp()) - int(made)
    return -PROOF_AHEAD <= age <= NONCE_LIFETIME


@dataclass(frozen=True)
class DPoPProof:
    """A proof that passed ``check_proof``: its key's thumbprint, its ``jti`` and ``iat``."""

    jkt: str
    jti: str
    iat: int


def access_token_hash(access_token: str) -> str:
    """RFC 9449 4.2 ``ath``: the base64url SHA-256 of the access token's ASCII."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _normalised(url: str) -> str:
    # RFC 9449 4.3 item 9: the URI without its query and fragment, compared after the syntax-based
    # normalisation of RFC 3986 6.2.2 that matters here (scheme and host are case-insensitive).
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


def _public_key(header: Mapping[str, Any], alg: str) -> Any:
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DPoPProofError("The proof's header carries no 'jwk'.")
    if PRIVATE_MEMBERS & jwk.keys():
        # RFC 9449 4.3 item 7: "does not contain a private key".
        raise DPoPProofError("The proof's 'jwk' must be a public key.")
    if jwk.get("kty") != DPOP_ALGS[alg] or (alg == "EdDSA" and jwk.get("crv") not in EDDSA_CURVES):
        raise DPoPProofError("The proof's 'jwk' is not a key for its 'alg'.")
    try:
        return JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError) as error:
        raise DPoPProofError("The proof's 'jwk' is not a valid key.") from error


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_proof(
    value: str, *, method: str, url: str, now: datetime, access_token: str | None = None,
    nonce_key: bytes | None = None,
) -> DPoPProof:  # fmt: skip
    """The proof in the ``DPoP`` header ``value`` of a ``method`` request to ``url`` received at
    ``now``, checked as RFC 9449 4.3 asks (all but the ``jti``'s use, ``remember_proof``); with
    ``access_token``, a request to a protected resource whose proof must carry its ``ath``
    (RFC 9449 7.1); with ``nonce_key``, one whose ``nonce`` idp gave (RFC 9449 8, 4.3 item 10).
    Raises ``DPoPProofError`` naming the first rule broken."""
    # Item 1: one header; a second one reaches the application joined to the first by a comma
    # (RFC 9110 5.3), four dots where one compact JWS has two. Item 2: a well-formed JWT.
    if not value or len(value) > MAX_PROOF_LENGTH or value.count(".") != 2:
        raise DPoPProofError("Send one DPoP proof, a signed JWT.")
    try:
        header = jws.extract_compact(value.encode("ascii"), registry=_REGISTRY).protected
    except (JoseError, ValueError, TypeError, UnicodeError) as error:
        raise DPoPProofError("The DPoP proof is not a well-formed JWT.") from error
    # Item 4: typ; item 5: an asymmetric algorithm idp supports.
    if header.get("typ") != DPOP_TYP:
        raise DPoPProofError(f"The DPoP proof's 'typ' must be '{DPOP_TYP}'.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in DPOP_ALGS:
        raise DPoPProofError(f"The DPoP proof's 'alg' must be one of {', '.join(DPOP_ALGS)}.")
    key = _public_key(header, alg)
    # Item 6: the signature, by the key in the header, with the header's algorithm only.
    try:
        signed = jws.deserialize_compact(value, key, algorithms=[alg], registry=_REGISTRY)
        payload = json.loads(signed.payload)
    except (JoseError, ValueError, TypeError, UnicodeError) as error:
        raise DPoPProofError("The DPoP proof's signature is invalid.") from error
    if not isinstance(payload, dict):
        raise DPoPProofError("The DPoP proof's claims are not a JSON object.")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise DPoPProofError("The DPoP proof needs a 'jti'.")
    # Item 8: the request's method; item 9: its URI.
    if payload.get("htm") != method:
        raise DPoPProofError("The DPoP proof's 'htm' does not match the request's method.")
    htu = payload.get("htu")
    if not isinstance(htu, str) or _normalised(htu) != _normalised(url):
        raise DPoPProofError("The DPoP proof's 'htu' does not match the request's URI.")
    # Item 11: created within an acceptable window (11.1), on idp's clock.
    iat = payload.get("iat")
    current = int(now.timestamp())
    if not _integer(iat) or not current - PROOF_WINDOW <= cast(int, iat) <= current + PROOF_AHEAD:
        raise DPoPProofError("The DPoP proof's 'iat' is outside the accepted window.")
    # Item 10: a nonce idp gave, when it requires one (RFC 9449 8, 9).
    if nonce_key is not None and not nonce_accepted(nonce_key, payload.get("nonce"), now):
        raise DPoPNonceError("The DPoP proof must carry the nonce idp gave (DPoP-Nonce).")
    # Item 12: at a protected resource, bound to the access token presented with it.
    if access_token is not None and payload.get("ath") != access_token_hash(access_token):
        raise DPoPProofError("The DPoP proof's 'ath' does not match the access token.")
    return DPoPProof(jkt=key.thumbprint(), jti=jti, iat=cast(int, iat))


_USED = cast(Table, UsedDPoPProof.__table__)


#: Built once per dialect: the proof's record, inserted unless one exists.
REMEMBER_PROOF = insert_unless_exists(_USED, _USED.c.jti_hash)


def remember_proof(
    write: Callable[[Any, Mapping[str, Any]], int], dialect: str, proof: DPoPProof
) -> bool:
    """Record ``proof`` as used; True only for the first request that carries it (RFC 9449 11.1:
    a ``jti`` used once). ``write`` sends the INSERT and answers its row count (idp.thin_reads
    ``write_alone``, committed at once: a replay on another node finds it). Keyed by the key's
    thumbprint and the ``jti``, so that nobody without the key can spend another client's
    ``jti`` first. Kept until the proof's ``iat`` leaves the window, while it could be accepted."""
    expires_at = datetime.fromtimestamp(proof.iat + PROOF_WINDOW, UTC)
    key = token_hash(f"{proof.jkt}.{proof.jti}")
    return write(REMEMBER_PROOF[dialect], {"jti_hash": key, "expires_at": expires_at}) == 1
