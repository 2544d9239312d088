"""Verified attestation (idp.services.attestation; WebAuthn L3 7.1 steps 20 to 23, 8.2.1)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.webauthn import AttestationObject, AttestedCredentialData, AuthenticatorData

from idp.services.attestation import (
    conveyance,
    load_roots,
    roots_by_format,
    untrusted_reason,
)
from idp.settings import SettingsError
from tests.support.attestation_ca import attestation_certificate, root_ca

MODEL = "ee882879-721c-4913-9775-3dfcce97072a"
OTHER_MODEL = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"


def attestation_object(fmt: str, statement: dict[str, Any], aaguid: str = MODEL) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    credential = AttestedCredentialData.create(
        uuid.UUID(aaguid).bytes, b"\x01" * 16, ES256.from_cryptography_key(key.public_key())
    )
    flags = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.AT
    auth_data = AuthenticatorData.create(b"\x00" * 32, flags, 0, credential)
    return bytes(AttestationObject.create(fmt, auth_data, statement))


def packed(der: bytes, aaguid: str = MODEL) -> bytes:
    return attestation_object("packed", {"alg": -7, "sig": b"s", "x5c": [der]}, aaguid)


def test_no_roots_file_means_no_roots() -> None:
    assert load_roots("") == ()
    assert roots_by_format(()) == {}


def test_the_roots_file_must_hold_ca_certificates(tmp_path: Path) -> None:
    root = root_ca()
    good = tmp_path / "roots.pem"
    good.write_bytes(root.pem + root_ca("Second Root").pem)
    assert len(load_roots(str(good))) == 2
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(attestation_certificate(root, MODEL).pem)
    with pytest.raises(SettingsError, match="not a CA"):
        load_roots(str(leaf))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(SettingsError):
        load_roots(str(garbage))
    with pytest.raises(SettingsError):
        load_roots(str(tmp_path / "missing.pem"))


def test_with_roots_the_conveyance_is_at_least_direct() -> None:
    """WebAuthn L3 5.4.7: "none" and "indirect" bring back nothing the roots can verify."""
    roots = (root_ca().pem,)
    assert conveyance("none", roots) == "direct"
    assert conveyance("indirect", roots) == "direct"
    assert conveyance("enterprise", roots) == "enterprise"
    assert conveyance("none", ()) == "none"


def test_only_formats_checked_against_the_configured_roots_alone_count() -> None:
    """py_webauthn checks apple and android-key chains against vendor roots it carries."""
    der = attestation_certificate(root_ca(), MODEL).der
    assert untrusted_reason(attestation_object("none", {}), MODEL) == "attestation_not_trusted"
    apple = attestation_object("apple", {"x5c": [der]})
    assert untrusted_reason(apple, MODEL) == "attestation_not_trusted"
    android = attestation_object("android-key", {"alg": -7, "sig": b"s", "x5c": [der]})
    assert untrusted_reason(android, MODEL) == "attestation_not_trusted"


def test_self_attestation_is_not_trusted() -> None:
    """8.2: a packed statement without x5c is signed by the credential's own key."""
    self_attested = attestation_object("packed", {"alg": -7, "sig": b"s"})
    assert untrusted_reason(self_attested, MODEL) == "attestation_not_trusted"


def test_an_attestation_certificate_that_is_a_ca_is_not_trusted() -> None:
    """8.2.1: "Basic Constraints extension MUST have the CA component set to false"."""
    der = attestation_certificate(root_ca(), MODEL, ca=True).der
    assert untrusted_reason(packed(der), MODEL) == "attestation_not_trusted"


def test_the_certificates_aaguid_must_be_the_one_claimed() -> None:
    """8.2.1: id-fido-gen-ce-aaguid "MUST match the AAGUID in authenticatorData": a key
    certified for one model cannot register as another."""
    der = attestation_certificate(root_ca(), MODEL).der
    assert untrusted_reason(packed(der, OTHER_MODEL), OTHER_MODEL) == "attestation_aaguid_mismatch"
    assert untrusted_reason(packed(der), MODEL) is None
    without = attestation_certificate(root_ca(), None).der
    assert untrusted_reason(packed(without), MODEL) is None
