"""Throw-away X.509 certificates made with ``cryptography``: a root CA, and what it issues (a
TLS server's certificate for the SMTP and https tests, an authenticator model's attestation
certificate for the WebAuthn ones)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


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


def builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    valid: tuple[timedelta, timedelta] | None = None,
) -> x509.CertificateBuilder:
    """A certificate of ``key`` for ``subject`` by ``issuer``, valid from a few minutes ago for a
    day (clocks of the test's parties may differ by a little); ``valid``: from and until, as
    offsets from now, instead."""
    now = datetime.now(UTC)
    start, end = valid or (-timedelta(minutes=5), timedelta(days=1))
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + start)
        .not_valid_after(now + end)
    )


def root_ca(name: x509.Name, valid: tuple[timedelta, timedelta] | None = None) -> Issued:
    """A self-signed CA certificate (basic constraints CA, key and certificate signing);
    ``valid`` as for ``builder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        builder(name, name, key, valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(
    ca: Issued,
    subject: x509.Name,
    *extensions: tuple[x509.ExtensionType, bool],
    valid: tuple[timedelta, timedelta] | None = None,
) -> Issued:
    """A certificate ``ca`` signs for a new key, with ``extensions`` (each with its criticality),
    the CA's key identifier and its own (which an intermediate CA's certificate needs, RFC 5280
    4.2.1.2); ``valid`` as for ``builder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    made = builder(subject, ca.certificate.subject, key, valid)
    for extension, critical in extensions:
        made = made.add_extension(extension, critical)
    identifier = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    own = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    made = made.add_extension(identifier, False).add_extension(own, False)
    return Issued(made.sign(ca.key, hashes.SHA256()), key)
