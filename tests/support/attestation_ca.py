"""Attestation certificates for the software authenticator (tests.support.authenticator): a root
CA as an authenticator vendor keeps one, and attestation certificates it issues to a model
(WebAuthn L3 8.2.1: a leaf, not a CA, naming the model's AAGUID in id-fido-gen-ce-aaguid)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from idp.services.attestation import FIDO_GEN_CE_AAGUID


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Authenticators"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])  # fmt: skip


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
    )


def root_ca(common_name: str = "Example Attestation Root") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, "Root CA")
    certificate = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def attestation_certificate(root: Issued, aaguid: str | None, *, ca: bool = False) -> Issued:
    """An attestation certificate of ``root`` for the model ``aaguid`` (None: without the
    id-fido-gen-ce-aaguid extension); ``ca``: wrongly a CA certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(
        _name("Example Key Model", "Authenticator Attestation"), root.certificate.subject, key
    ).add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if aaguid is not None:
        value = b"\x04\x10" + uuid.UUID(aaguid).bytes  # an OCTET STRING of the 16 bytes
        builder = builder.add_extension(
            x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, value), critical=False
        )
    return Issued(builder.sign(root.key, hashes.SHA256()), key)
