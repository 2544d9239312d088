"""Attestation certificates for the software authenticator (tests.support.authenticator): a root
CA as an authenticator vendor keeps one, an intermediate CA under it, and attestation
certificates they issue to a model (WebAuthn L3 8.2.1: a leaf, not a CA, its Subject C, O,
OU "Authenticator Attestation" and CN, naming the model's AAGUID in id-fido-gen-ce-aaguid)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from idp.services.attestation import ATTESTATION_OU, FIDO_GEN_CE_AAGUID
from tests.support import certificates
from tests.support.certificates import CA_KEY_USAGE, Issued


def _name(common_name: str, unit: str | None, country: str | None = "SE") -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, country)] if country else []
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Authenticators"))
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def root_ca(
    common_name: str = "Example Attestation Root", valid: tuple[timedelta, timedelta] | None = None
) -> Issued:
    return certificates.root_ca(_name(common_name, "Root CA"), valid)


def intermediate_ca(
    root: Issued,
    common_name: str = "Example Attestation Intermediate",
    valid: tuple[timedelta, timedelta] | None = None,
) -> Issued:
    """A CA certificate ``root`` issues, as vendors issue their models' certificates through;
    ``valid``: its validity as offsets from now (tests.support.certificates ``builder``)."""
    return certificates.issue(root, _name(common_name, "Intermediate CA"),
                              (x509.BasicConstraints(ca=True, path_length=0), True),
                              (CA_KEY_USAGE, True), valid=valid)  # fmt: skip


def attestation_certificate(
    root: Issued,
    aaguid: str | None,
    *,
    ca: bool = False,
    basic_constraints: bool = True,
    unit: str | None = ATTESTATION_OU,
    country: str | None = "SE",
    aaguid_critical: bool = False,
    valid: tuple[timedelta, timedelta] | None = None,
) -> Issued:
    """An attestation certificate of ``root`` (or an intermediate CA) for the model ``aaguid``
    (None: without the id-fido-gen-ce-aaguid extension); ``ca``: wrongly a CA certificate;
    ``basic_constraints``, ``unit``, ``country``: False or None leaves that part of the 8.2.1
    requirements out; ``aaguid_critical``: the extension wrongly critical; ``valid`` as for
    tests.support.certificates ``builder``."""
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if basic_constraints:
        extensions.append((x509.BasicConstraints(ca=ca, path_length=None), True))
    if aaguid is not None:
        value = b"\x04\x10" + uuid.UUID(aaguid).bytes  # an OCTET STRING of the 16 bytes
        extensions.append((x509.UnrecognizedExtension(FIDO_GEN_CE_AAGUID, value), aaguid_critical))
    subject = _name("Example Key Model", unit, country)
    return certificates.issue(root, subject, *extensions, valid=valid)
