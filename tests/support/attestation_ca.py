"""Attestation certificates for the software authenticator (tests.support.authenticator): a root
CA as an authenticator vendor keeps one, and attestation certificates it issues to a model
(WebAuthn L3 8.2.1: a leaf, not a CA, naming the model's AAGUID in id-fido-gen-ce-aaguid)."""

from __future__ import annotations

import uuid

from cryptography import x509
from cryptography.x509.oid import NameOID

from idp.services.attestation import FIDO_GEN_CE_AAGUID
from tests.support import certificates
from tests.support.certificates import Issued


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Authenticators"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def root_ca(common_name: str = "Example Attestation Root") -> Issued:
    return certificates.root_ca(_name(common_name, "Root CA"))


def attestation_certificate(root: Issued, aaguid: str | None, *, ca: bool = False) -> Issued:
    """An attestation certificate of ``root`` for the model ``aaguid`` (None: without the
    id-fido-gen-ce-aaguid extension); ``ca``: wrongly a CA certificate."""
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=ca, path_length=None), True)
    ]
    if aaguid is not None:
        value = b"\x04\x10" + uuid.UUID(aaguid).bytes  # an OCTET STRING of the 16 bytes
        extensions.append((x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, value), False))
    subject = _name("Example Key Model", "Authenticator Attestation")
    return certificates.issue(root, subject, *extensions)
