"""Verified attestation: the authenticator's model proven by a certificate chain to roots the
deployment trusts (WebAuthn L3 6.5, 7.1 steps 20 to 23; docs/configuration.md,
``webauthn_attestation_roots``).

Without roots, idp asks for the attestation conveyance its sign-in policy names and checks the
attestation statement's signature, but the AAGUID it reads is what the authenticator claims: the
allow list of authenticator models is a filter against accidental use, not proof of the
hardware (7.1 step 22 leaves the trust decision to the relying party). With roots configured,
every registration must carry an attestation statement whose certificate chain ends at one of
them (7.1 step 23: "If the attestation statement attStmt successfully verified but is not
trustworthy per step 21 above, the Relying Party SHOULD fail the registration ceremony"), so
the AAGUID the allow list compares is the one the attesting key signed.

Only the formats whose chain is checked against the configured roots alone count: ``packed``
with an ``x5c`` chain (8.2), ``tpm`` (8.3) and ``fido-u2f`` (8.6). py_webauthn verifies
``apple``, ``android-key`` and ``android-safetynet`` against vendor roots it carries itself,
which would let a chain the deployment never chose pass; ``none`` and self attestation (a
``packed`` statement without ``x5c``, signed by the credential's own key) prove nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL.crypto import (
    FILETYPE_ASN1,
    FILETYPE_PEM,
    Error,
    X509Store,
    X509StoreContext,
    X509StoreContextError,
    load_certificate,
)
from webauthn.helpers import parse_attestation_object
from webauthn.helpers.structs import AttestationFormat

from idp.settings import SettingsError

#: Attestation formats whose certificate chain py_webauthn checks against the given roots only.
TRUSTED_FORMATS = (AttestationFormat.PACKED, AttestationFormat.TPM, AttestationFormat.FIDO_U2F)
#: WebAuthn L3 8.2.1, 8.3.1: id-fido-gen-ce-aaguid, the AAGUID the attestation certificate is for.
FIDO_GEN_CE_AAGUID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def load_roots(path: str, now: datetime) -> tuple[bytes, ...]:
    """The PEM certificates of ``path`` (empty path: none), each a trust anchor at ``now``: a
    file that cannot be read or holds none, or a certificate in it that is no trust anchor
    (``_anchor_refusal``), is a configuration error at start-up, naming the file and the
    certificate's subject, rather than every registration refused later for a reason no user
    can act on."""
    if not path:
        return ()
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"webauthn_attestation_roots: {error}") from error
    try:
        certificates = x509.load_pem_x509_certificates(text)
    except ValueError as error:
        raise SettingsError(f"webauthn_attestation_roots {path}: {error}") from error
    for certificate in certificates:
        refusal = _anchor_refusal(certificate, now)
        if refusal is not None:
            raise SettingsError(
                f"webauthn_attestation_roots {path}: {certificate.subject.rfc4514_string()} "
                f"{refusal}"
            )
    return tuple(c.public_bytes(Encoding.PEM) for c in certificates)


def _anchor_refusal(certificate: x509.Certificate, now: datetime) -> str | None:
    """Why ``certificate`` cannot end an attestation chain at ``now``, or None. ``_chain_root``
    ends a path only at a certificate of the file that is self-signed (OpenSSL's store without
    partial chains; RFC 5280 6.1: the trust anchor begins the path, and a CA's certificate issued
    by another is no anchor on its own), and judges every certificate of the path, the root
    included, valid at idp's clock (RFC 5280 6.1.3 (a)(2)); so an intermediate alone, a
    certificate that is no CA (WebAuthn L3 8.2.1: the attestation certificate is a leaf), an
    expired root or one not yet valid would fail every registration."""
    if not _is_ca(certificate):
        return "is not a CA certificate"
    if not _self_signed(certificate):
        return (
            f"is not self-signed (issued by {certificate.issuer.rfc4514_string()}): put the "
            "vendor's root in the file; an intermediate travels in the attestation's x5c"
        )
    if certificate.not_valid_after_utc < now:
        return f"expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if certificate.not_valid_before_utc > now:
        # RFC 5280 6.1.3 (a)(2) bounds the period at its start too: until then every
        # registration would be refused (a clock behind, or a root not yet in force).
        return f"is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return None


def _self_signed(certificate: x509.Certificate) -> bool:
    # Its issuer is its subject and its own key verifies its signature.
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def conveyance(asked: str, roots: tuple[bytes, ...]) -> str:
    """The attestation conveyance to ask for (WebAuthn L3 5.4.7): the policy's, or with roots
    configured at least ``direct``, since ``none`` and ``indirect`` (which lets the client
    anonymise the statement) would bring back nothing the roots can verify."""
    if roots and asked not in ("direct", "enterprise"):
        return "direct"
    return asked


@dataclass(frozen=True)
class Verdict:
    """What the roots say of a registration's attestation: ``reason`` why it is not trustworthy
    (None: it is), and ``root``, the SHA-256 fingerprint (hex) of the root its chain ended at
    (``root_fingerprint``), which the passkey keeps (``Passkey.attestation_root``)."""

    reason: str | None
    root: str | None = None


def attest(
    attestation_object: bytes, aaguid: str, roots: tuple[bytes, ...], now: datetime
) -> Verdict:
    """The verdict on a registration whose statement py_webauthn verified (its signature, and
    for ``tpm`` the 8.3.1 certificate rules), per ``roots`` at ``now``. Not trustworthy: a
    format outside ``TRUSTED_FORMATS``, self attestation, a chain that does not reach one of the
    roots with every certificate valid at ``now`` (``_chain_root``), an attestation certificate
    that is a CA (8.2.1: "Basic Constraints extension MUST have the CA component set to false"),
    a ``packed`` one that breaks the rest of 8.2.1 (``_packed_refusal``), or one made for another
    authenticator model than the AAGUID claimed (8.2.1, 8.3.1: the id-fido-gen-ce-aaguid
    extension "MUST match the AAGUID in authenticatorData", which py_webauthn 2 and 3 do not
    check). Without roots nothing is verified, and nothing refused."""
    if not roots:
        return Verdict(None)
    parsed = parse_attestation_object(attestation_object)
    if parsed.fmt not in TRUSTED_FORMATS:
        return Verdict("attestation_not_trusted")
    chain = parsed.att_stmt.x5c or []
    if not chain:
        # Self attestation: the credential vouching for itself.
        return Verdict("attestation_not_trusted")
    root = _chain_root(chain, roots, now)
    if root is None:
        return Verdict("attestation_not_trusted")
    certificate = x509.load_der_x509_certificate(chain[0])
    if _is_ca(certificate):
        return Verdict("attestation_not_trusted")
    if parsed.fmt == AttestationFormat.PACKED and _packed_refusal(certificate):
        return Verdict("attestation_certificate_invalid")
    try:
        extension = certificate.extensions.get_extension_for_oid(FIDO_GEN_CE_AAGUID)
    except x509.ExtensionNotFound:
        return Verdict(None, root)
    value = extension.value
    certified = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    # The extension's value is an OCTET STRING of the 16-byte AAGUID (8.2.1): 04 10 <AAGUID>.
    if certified[:2] != b"\x04\x10" or certified[2:].hex() != aaguid.replace("-", "").lower():
        return Verdict("attestation_aaguid_mismatch")
    return Verdict(None, root)


def untrusted_reason(
    attestation_object: bytes, aaguid: str, roots: tuple[bytes, ...], now: datetime
) -> str | None:
    """``attest``'s reason alone: None when the attestation is trustworthy."""
    return attest(attestation_object, aaguid, roots, now).reason


def root_fingerprint(certificate: x509.Certificate) -> str:
    """How a passkey names the root its attestation chained to: the SHA-256 of its DER, hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


@lru_cache(maxsize=8)
def root_fingerprints(roots: tuple[bytes, ...]) -> frozenset[str]:
    """The fingerprints of the configured ``roots`` (PEM): a passkey whose recorded root is not
    among them was attested by a root the deployment no longer trusts. Computed once per set of
    roots (a setting, fixed for the process), not once per passkey a page lists."""
    return frozenset(root_fingerprint(x509.load_pem_x509_certificate(pem)) for pem in roots)


def expired_roots(roots: tuple[bytes, ...], now: datetime) -> list[str]:
    """Each of ``roots`` past its end at ``now``, as its subject and the time it ended. The
    roots are checked at start-up (``load_roots``), but one that expires while idp runs ends
    every path through it (``_chain_root``: RFC 5280 6.1.3 (a)(2)) and attests nothing from
    then on, refusing the registrations of its vendor's keys: the health document names it
    (idp.services.health ``HealthReport``), so that the operator replaces it."""
    return [f"{subject} expired on {ended:%Y-%m-%d %H:%M} UTC"
            for subject, ended in _root_ends(roots) if ended < now]  # fmt: skip


@lru_cache(maxsize=8)
def _root_ends(roots: tuple[bytes, ...]) -> tuple[tuple[str, datetime], ...]:
    """Each root's subject and end, parsed once per set of roots (a setting, fixed for the
    process), not on every health check."""
    loaded = (x509.load_pem_x509_certificate(pem) for pem in roots)
    return tuple((c.subject.rfc4514_string(), c.not_valid_after_utc) for c in loaded)


def _chain_root(chain: list[bytes], roots: tuple[bytes, ...], now: datetime) -> str | None:
    """The fingerprint of the root ``chain`` (the leaf, then the intermediates x5c carries: 8.2
    "followed by its certificate chain") reaches among ``roots``, or None if it reaches none.

    The validity periods are judged at ``now``, idp's clock (docs/architecture.md, "The one
    clock"), for every certificate of the path, the intermediates and the root included (RFC 5280
    6.1.3 (a)(2)). py_webauthn's own check (``validate_certificate_chain``) reads the wall
    clock, so idp hands it no roots and makes this the one chain check."""
    store = X509Store()
    for root in roots:
        store.add_cert(load_certificate(FILETYPE_PEM, root))
    store.set_time(now)
    try:
        leaf = load_certificate(FILETYPE_ASN1, chain[0])
        intermediates = [load_certificate(FILETYPE_ASN1, der) for der in chain[1:]]
        path = X509StoreContext(store, leaf, intermediates).get_verified_chain()
    except (Error, X509StoreContextError):  # an unreadable intermediate, or no valid path
        return None
    return root_fingerprint(path[-1].to_cryptography())


#: WebAuthn L3 8.2.1: the attestation certificate's Subject-OU, verbatim.
ATTESTATION_OU = "Authenticator Attestation"


def _packed_refusal(certificate: x509.Certificate) -> str | None:
    """The WebAuthn L3 8.2.1 rule a ``packed`` attestation certificate breaks, or None
    (py_webauthn checks none of them for ``packed``): a Subject with C, O, OU "Authenticator
    Attestation" and CN, "The Basic Constraints extension MUST have the CA component set to
    false" (present, then; since only a version 3 certificate has extensions, RFC 5280 4.1.2.9,
    this also holds "Version MUST be set to 3"). id-fido-gen-ce-aaguid "MUST NOT be marked as
    critical": OpenSSL refuses a chain whose certificate has a critical extension it does not
    know (RFC 5280 4.2), so ``_chain_root`` has refused one already."""
    subject = certificate.subject
    for oid, name in ((NameOID.COUNTRY_NAME, "C"), (NameOID.ORGANIZATION_NAME, "O"),
                      (NameOID.COMMON_NAME, "CN")):  # fmt: skip
        if not [a for a in subject.get_attributes_for_oid(oid) if a.value]:
            return f"subject without {name}"
    units = [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != [ATTESTATION_OU]:
        return "subject OU"
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return "basic constraints"
    if constraints.value.ca:
        return "basic constraints"
    return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.value.ca)


#: A passkey's attestation as the roots configured now see it (``attestation_state``).
VERIFIED, NOT_VERIFIED, OTHER_ROOT = "verified", "not_verified", "other_root"
_WORDS = {
    VERIFIED: "attestation verified",
    NOT_VERIFIED: "attestation not verified",
    OTHER_ROOT: "attested by a root no longer configured",
}


def attestation_state(recorded: str | None, roots: tuple[bytes, ...]) -> str:
    """``VERIFIED`` when the root a passkey's registration recorded (``Passkey.attestation_root``)
    is among the ``roots`` configured now, ``OTHER_ROOT`` when it is not, ``NOT_VERIFIED`` when
    none was recorded (docs/admins.md, "Verified attestation")."""
    if recorded is None:
        return NOT_VERIFIED
    return VERIFIED if recorded in root_fingerprints(roots) else OTHER_ROOT


def attestation_words(recorded: str | None, roots: tuple[bytes, ...]) -> str | None:
    """What the console says of a passkey's attestation (``attestation_state`` in words); None
    where neither speaks of attestation (no roots configured, none recorded)."""
    if recorded is None and not roots:
        return None
    return _WORDS[attestation_state(recorded, roots)]
