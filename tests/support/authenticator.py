"""A software authenticator: what a platform authenticator and the browser hand to the page.

Built on fido2's data classes, it answers ``PublicKeyCredentialCreationOptionsJSON`` and
``...RequestOptionsJSON`` (what idp's options endpoints return) with the credential's
``toJSON()`` form (WebAuthn L3 5.1). It is honest by default: UP and UV set, the origin and
challenge it was given, a counter that grows by ``counter_step`` (0: a synced passkey). Every field
a relying party must check can be tampered with per call.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from fido2.cose import ES256, RS256, CoseKey, EdDSA
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    CollectedClientData,
)

from tests.support.certificates import Issued

FLAG = AuthenticatorData.FLAG
ORIGIN = "http://localhost"
#: Leave a value as an honest authenticator would send it.
KEEP: Any = object()

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class NotAllowedError(Exception):
    """The DOMException a page sees when no credential can answer (or the algorithms don't fit)."""


class InvalidStateError(Exception):
    """The DOMException for a create() whose excludeCredentials names a credential held here."""


@dataclass
class Credential:
    """A resident (discoverable) credential as the authenticator stores it."""

    credential_id: bytes
    user_handle: bytes
    private_key: PrivateKey
    sign_count: int


def _new_key(algorithm: int) -> tuple[PrivateKey, CoseKey]:
    if algorithm == ES256.ALGORITHM:
        ec_key = ec.generate_private_key(ec.SECP256R1())
        return ec_key, ES256.from_cryptography_key(ec_key.public_key())
    if algorithm == EdDSA.ALGORITHM:
        ed_key = ed25519.Ed25519PrivateKey.generate()
        return ed_key, EdDSA.from_cryptography_key(ed_key.public_key())
    if algorithm == RS256.ALGORITHM:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return rsa_key, RS256.from_cryptography_key(rsa_key.public_key())
    raise ValueError(f"unsupported COSE algorithm {algorithm}")


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def _client_data(
    kind: str, challenge: str, origin: str, cross_origin: bool, top_origin: str | None
) -> CollectedClientData:
    extra = {"topOrigin": top_origin} if top_origin is not None else {}
    return CollectedClientData.create(kind, challenge, origin, cross_origin, **extra)


def _u2f_signed(
    auth_data: AuthenticatorData, client_data: CollectedClientData, credential_key: PrivateKey
) -> bytes:
    """WebAuthn L3 8.6 verificationData: 0x00 || rpIdHash || clientDataHash || credentialId ||
    the credential's public key as an uncompressed P-256 point."""
    assert isinstance(credential_key, ec.EllipticCurvePrivateKey), "U2F keys are P-256"
    assert auth_data.credential_data is not None
    point = credential_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    credential_id = auth_data.credential_data.credential_id
    return b"\x00" + auth_data.rp_id_hash + client_data.hash + credential_id + point


def _b64(data: bytes) -> str:
    return websafe_encode(data)


class SoftAuthenticator:
    def __init__(
        self,
        *,
        aaguid: str = "00000000-0000-0000-0000-000000000000",
        algorithm: int = ES256.ALGORITHM,
        backup_eligible: bool = False,
        backed_up: bool = False,
        user_verified: bool = True,
        user_present: bool = True,
        sign_count_start: int = 0,
        counter_step: int = 1,
        transports: tuple[str, ...] = ("hybrid", "internal"),
        attestation_certificate: Issued | None = None,
        attestation_chain: tuple[Issued, ...] = (),
        attestation_format: str = "packed",
        self_attestation: bool = False,
    ) -> None:
        self.aaguid = uuid.UUID(aaguid).bytes
        self.algorithm = algorithm
        self.backup_eligible = backup_eligible
        self.backed_up = backed_up
        self.user_verified = user_verified
        self.user_present = user_present
        self.sign_count_start = sign_count_start
        self.counter_step = counter_step
        self.transports = list(transports)
        #: Where a relying party asks for attestation (WebAuthn L3 5.4.7 "direct"): a "packed"
        #: statement signed by this certificate's key (8.2), or by the credential's own key
        #: (``self_attestation``); otherwise, or when it asks for "none", the "none" format.
        #: ``attestation_chain``: the intermediate CAs x5c carries after the certificate;
        #: ``attestation_format`` "fido-u2f": a U2F statement (8.6) instead of a packed one.
        self.attestation_certificate = attestation_certificate
        self.attestation_chain = attestation_chain
        self.attestation_format = attestation_format
        self.self_attestation = self_attestation
        #: rp id -> credential id -> credential
        self.credentials: dict[str, dict[bytes, Credential]] = {}

    def flags(self) -> FLAG:
        """The flags an honest ceremony reports (WebAuthn L3 6.1)."""
        wanted = {FLAG.UP: self.user_present, FLAG.UV: self.user_verified,
                  FLAG.BE: self.backup_eligible, FLAG.BS: self.backed_up}  # fmt: skip
        flags = FLAG(0)
        for flag in (flag for flag, on in wanted.items() if on):
            flags |= flag
        return flags

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        cross_origin: bool = False,
        top_origin: str | None = None,
        rp_id_override: str | None = None,
        challenge: str | None = None,
        client_data_type: str = "webauthn.create",
        flags: FLAG | None = None,
        counter: int | None = None,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.create() followed by ``credential.toJSON()``."""
        rp_id = options["rp"]["id"]
        if self.algorithm not in [p["alg"] for p in options["pubKeyCredParams"]]:
            raise NotAllowedError("no supported algorithm offered")
        held = self.credentials.setdefault(rp_id, {})
        if {websafe_decode(c["id"]) for c in options.get("excludeCredentials", [])} & set(held):
            raise InvalidStateError("this authenticator already holds an excluded credential")
        user_handle = websafe_decode(options["user"]["id"])
        private_key, public_key = _new_key(self.algorithm)
        new_id = credential_id or os.urandom(16)
        credential = Credential(new_id, user_handle, private_key, self.sign_count_start)
        # CTAP 2.1 authenticatorMakeCredential: a new resident credential replaces the user's.
        for old in [c for c in held.values() if c.user_handle == user_handle]:
            del held[old.credential_id]
        held[credential.credential_id] = credential
        auth_data = AuthenticatorData.create(
            hashlib.sha256((rp_id_override or rp_id).encode()).digest(),
            (self.flags() if flags is None else flags) | FLAG.AT,
            credential.sign_count if counter is None else counter,
            AttestedCredentialData.create(self.aaguid, credential.credential_id, public_key),
        )
        client_data = _client_data(client_data_type, challenge or options["challenge"],
                                   origin, cross_origin, top_origin)  # fmt: skip
        spki = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        extensions = options.get("extensions") or {}
        attestation = self._attestation(options, auth_data, client_data, private_key)
        return self._credential_json(
            credential.credential_id,
            {
                "clientDataJSON": _b64(client_data),
                "attestationObject": _b64(attestation),
                "authenticatorData": _b64(auth_data),
                "publicKey": _b64(spki),
                "publicKeyAlgorithm": self.algorithm,
                "transports": self.transports,
            },
            {"credProps": {"rk": True}} if "credProps" in extensions else {},
        )

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str = ORIGIN,
        cross_origin: bool = False,
        top_origin: str | None = None,
        rp_id_override: str | None = None,
        challenge: str | None = None,
        client_data_type: str = "webauthn.get",
        flags: FLAG | None = None,
        counter: int | None = None,
        user_handle: Any = KEEP,
        claimed_id: bytes | None = None,
    ) -> dict[str, Any]:
        """navigator.credentials.get() followed by ``credential.toJSON()``, with the newest
        credential allowed. ``user_handle``: None omits it, bytes replace it. ``claimed_id``
        reports another credential id than the one that signed."""
        rp_id = options["rpId"]
        allowed = {websafe_decode(c["id"]) for c in options.get("allowCredentials", [])}
        held = self.credentials.get(rp_id, {}).values()
        candidates = [c for c in held if not allowed or c.credential_id in allowed]
        if not candidates:
            raise NotAllowedError("no credential for this request")
        credential = candidates[-1]
        if counter is None:
            credential.sign_count += self.counter_step
            counter = credential.sign_count
        auth_data = AuthenticatorData.create(
            hashlib.sha256((rp_id_override or rp_id).encode()).digest(),
            self.flags() if flags is None else flags,
            counter,
        )
        client_data = _client_data(client_data_type, challenge or options["challenge"],
                                   origin, cross_origin, top_origin)  # fmt: skip
        response = {
            "clientDataJSON": _b64(client_data),
            "authenticatorData": _b64(auth_data),
            # WebAuthn L3 6.3.3: the signature is over authData || SHA-256(clientDataJSON).
            "signature": _b64(_sign(credential.private_key, auth_data + client_data.hash)),
        }
        handle = credential.user_handle if user_handle is KEEP else user_handle
        if handle is not None:
            response["userHandle"] = _b64(handle)
        return self._credential_json(claimed_id or credential.credential_id, response, {})

    def _attestation(
        self,
        options: dict[str, Any],
        auth_data: AuthenticatorData,
        client_data: CollectedClientData,
        credential_key: PrivateKey,
    ) -> AttestationObject:
        """WebAuthn L3 8.2: a "packed" statement over authenticatorData and the client data's
        hash, when the relying party asked for attestation and this authenticator makes one."""
        signed = bytes(auth_data) + client_data.hash
        if options.get("attestation", "none") == "none":
            return AttestationObject.create("none", auth_data, {})
        if self.attestation_certificate is not None:
            key = self.attestation_certificate.key
            x5c = [self.attestation_certificate.der, *(ca.der for ca in self.attestation_chain)]
            if self.attestation_format == "fido-u2f":
                return AttestationObject.create("fido-u2f", auth_data, {
                    "sig": _sign(key, _u2f_signed(auth_data, client_data, credential_key)),
                    "x5c": x5c,
                })  # fmt: skip
            statement = {"alg": ES256.ALGORITHM, "sig": _sign(key, signed), "x5c": x5c}
            return AttestationObject.create(self.attestation_format, auth_data, statement)
        if self.self_attestation:
            statement = {"alg": self.algorithm, "sig": _sign(credential_key, signed)}
            return AttestationObject.create("packed", auth_data, statement)
        return AttestationObject.create("none", auth_data, {})

    def credential_ids(self, rp_id: str = "localhost") -> list[str]:
        return [_b64(c) for c in self.credentials.get(rp_id, {})]

    @staticmethod
    def _credential_json(
        credential_id: bytes, response: dict[str, Any], extensions: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": _b64(credential_id),
            "rawId": _b64(credential_id),
            "type": "public-key",
            "response": response,
            "clientExtensionResults": extensions,
            "authenticatorAttachment": "platform",
        }
