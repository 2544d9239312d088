"""Verified attestation (idp.services.attestation; WebAuthn L3 7.1 steps 20 to 23, 8.2.1)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.cose import ES256
from fido2.webauthn import AttestationObject, AttestedCredentialData, AuthenticatorData

from idp.services.attestation import conveyance, load_roots, untrusted_reason
from idp.settings import SettingsError
from tests.support import certificates
from tests.support.attestation_ca import attestation_certificate, intermediate_ca, root_ca
from tests.support.certificates import Issued

MODEL = "ee882879-721c-4913-9775-3dfcce97072a"
OTHER_MODEL = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"
#: The vendor root the checks below trust.
ROOT = root_ca()
ROOTS = (ROOT.pem,)


def now() -> datetime:
    return datetime.now(UTC)


def judged(
    statement: bytes,
    aaguid: str = MODEL,
    roots: tuple[bytes, ...] = ROOTS,
    at: datetime | None = None,
) -> str | None:
    """``untrusted_reason`` with ROOT trusted, at ``at`` (now)."""
    return untrusted_reason(statement, aaguid, roots, at or now())


def attestation_object(fmt: str, statement: dict[str, Any], aaguid: str = MODEL) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    credential = AttestedCredentialData.create(
        uuid.UUID(aaguid).bytes, b"\x01" * 16, ES256.from_cryptography_key(key.public_key())
    )
    flags = AuthenticatorData.FLAG.UP | AuthenticatorData.FLAG.AT
    auth_data = AuthenticatorData.create(b"\x00" * 32, flags, 0, credential)
    return bytes(AttestationObject.create(fmt, auth_data, statement))


def packed(der: bytes, aaguid: str = MODEL, *chain: Issued) -> bytes:
    x5c = [der, *(ca.der for ca in chain)]
    return attestation_object("packed", {"alg": -7, "sig": b"s", "x5c": x5c}, aaguid)


def test_no_roots_file_means_no_roots() -> None:
    assert load_roots("", now()) == ()


def test_the_roots_file_must_hold_ca_certificates(tmp_path: Path) -> None:
    root = root_ca()
    good = tmp_path / "roots.pem"
    good.write_bytes(root.pem + root_ca("Second Root").pem)
    assert len(load_roots(str(good), now())) == 2
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(attestation_certificate(root, MODEL).pem)
    with pytest.raises(SettingsError, match="not a CA"):
        load_roots(str(leaf), now())
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(SettingsError):
        load_roots(str(garbage), now())
    with pytest.raises(SettingsError):
        load_roots(str(tmp_path / "missing.pem"), now())


def test_a_roots_file_of_an_intermediate_alone_stops_the_start(tmp_path: Path) -> None:
    """A CA certificate that is not self-signed ends no path in the chain check (OpenSSL's store
    takes only a self-signed certificate as the anchor), so every registration would be refused:
    the start is refused instead, naming the file and the certificate. A certificate whose issuer
    is its subject but whose signature its own key does not verify is no anchor either."""
    intermediate = intermediate_ca(ROOT)
    leaf = attestation_certificate(intermediate, MODEL).der
    assert judged(packed(leaf, MODEL, intermediate), roots=(intermediate.pem,)) is not None
    alone = tmp_path / "intermediate.pem"
    alone.write_bytes(ROOT.pem + intermediate.pem)
    subject = intermediate.certificate.subject.rfc4514_string()
    with pytest.raises(SettingsError, match="not self-signed") as refused:
        load_roots(str(alone), now())
    assert str(alone) in str(refused.value)
    assert subject in str(refused.value)
    authority = (x509.BasicConstraints(ca=True, path_length=None), True)
    posing = certificates.issue(ROOT, ROOT.certificate.subject, authority)
    assert posing.certificate.issuer == posing.certificate.subject
    forged = tmp_path / "posing.pem"
    forged.write_bytes(posing.pem)
    with pytest.raises(SettingsError, match="not self-signed"):
        load_roots(str(forged), now())


def test_a_roots_file_with_an_expired_root_stops_the_start(tmp_path: Path) -> None:
    """RFC 5280 6.1.3 (a)(2): the chain check judges the root valid at idp's clock, so an
    expired root attests nothing; the start at a time past its end is refused, naming the file
    and the root."""
    short = root_ca("Short-lived Root", valid=(-timedelta(hours=1), timedelta(hours=1)))
    roots = tmp_path / "roots.pem"
    roots.write_bytes(ROOT.pem + short.pem)
    assert len(load_roots(str(roots), now())) == 2
    with pytest.raises(SettingsError, match="expired") as refused:
        load_roots(str(roots), now() + timedelta(hours=2))
    assert str(roots) in str(refused.value)
    assert "CN=Short-lived Root" in str(refused.value)


def test_a_roots_file_with_a_root_not_yet_valid_stops_the_start(tmp_path: Path) -> None:
    """RFC 5280 6.1.3 (a)(2) holds at both ends of the validity period: the chain check judges
    the root valid at idp's clock, so a root whose notBefore is still ahead attests nothing
    (every registration refused until then); the start is refused, naming the file and the
    root, as an expired root's is, and taken once idp's clock reaches its start."""
    early = root_ca("Early Root", valid=(timedelta(hours=1), timedelta(days=1)))
    statement = packed(attestation_certificate(early, MODEL, valid=HOUR_TO_DAY).der)
    assert judged(statement, roots=(early.pem,)) == "attestation_not_trusted"
    roots = tmp_path / "roots.pem"
    roots.write_bytes(ROOT.pem + early.pem)
    with pytest.raises(SettingsError, match="not valid before") as refused:
        load_roots(str(roots), now())
    assert str(roots) in str(refused.value)
    assert "CN=Early Root" in str(refused.value)
    assert len(load_roots(str(roots), now() + timedelta(hours=2))) == 2


def test_with_roots_the_conveyance_is_at_least_direct() -> None:
    """WebAuthn L3 5.4.7: "none" and "indirect" bring back nothing the roots can verify."""
    roots = (root_ca().pem,)
    assert conveyance("none", roots) == "direct"
    assert conveyance("indirect", roots) == "direct"
    assert conveyance("enterprise", roots) == "enterprise"
    assert conveyance("none", ()) == "none"


def test_only_formats_checked_against_the_configured_roots_alone_count() -> None:
    """py_webauthn checks apple and android-key chains against vendor roots it carries."""
    der = attestation_certificate(ROOT, MODEL).der
    assert judged(attestation_object("none", {})) == "attestation_not_trusted"
    apple = attestation_object("apple", {"x5c": [der]})
    assert judged(apple) == "attestation_not_trusted"
    android = attestation_object("android-key", {"alg": -7, "sig": b"s", "x5c": [der]})
    assert judged(android) == "attestation_not_trusted"
    assert judged(packed(der)) is None


def test_self_attestation_is_not_trusted() -> None:
    """8.2: a packed statement without x5c is signed by the credential's own key."""
    self_attested = attestation_object("packed", {"alg": -7, "sig": b"s"})
    assert judged(self_attested) == "attestation_not_trusted"


def test_an_attestation_certificate_that_is_a_ca_is_not_trusted() -> None:
    """8.2.1: "Basic Constraints extension MUST have the CA component set to false"."""
    der = attestation_certificate(ROOT, MODEL, ca=True).der
    assert judged(packed(der)) == "attestation_not_trusted"


def test_the_certificates_aaguid_must_be_the_one_claimed() -> None:
    """8.2.1: id-fido-gen-ce-aaguid "MUST match the AAGUID in authenticatorData": a key
    certified for one model cannot register as another."""
    der = attestation_certificate(ROOT, MODEL).der
    assert judged(packed(der, OTHER_MODEL), OTHER_MODEL) == "attestation_aaguid_mismatch"
    assert judged(packed(der)) is None
    without = attestation_certificate(ROOT, None).der
    assert judged(packed(without)) is None


def test_the_chain_is_judged_at_idps_clock_not_the_wall_clocks() -> None:
    """RFC 5280 6.1.3 (a)(2): each certificate of the path is valid at the time of the check,
    which is idp's clock (docs/architecture.md, "The one clock"): a leaf valid by the wall clock
    is refused once idp's clock is past its end or before its start."""
    statement = packed(attestation_certificate(ROOT, MODEL, valid=HOUR_TO_DAY).der)
    assert judged(statement) is None
    assert judged(statement, at=now() + timedelta(days=2)) == "attestation_not_trusted"
    assert judged(statement, at=now() - timedelta(hours=2)) == "attestation_not_trusted"


#: A validity from an hour ago to a day from now.
HOUR_TO_DAY = (-timedelta(hours=1), timedelta(days=1))


def test_an_intermediate_in_x5c_completes_the_chain_while_it_is_valid() -> None:
    """8.2: x5c is the attestation certificate "followed by its certificate chain". The chain
    through a vendor's intermediate is trusted; once idp's clock is past the intermediate's end
    (the leaf and the root still valid) it is not, and without the intermediate nothing reaches
    the root."""
    intermediate = intermediate_ca(ROOT, valid=(-timedelta(hours=1), timedelta(hours=1)))
    leaf = attestation_certificate(intermediate, MODEL, valid=HOUR_TO_DAY).der
    assert judged(packed(leaf, MODEL, intermediate)) is None
    later = now() + timedelta(hours=2)
    assert judged(packed(leaf, MODEL, intermediate), at=later) == "attestation_not_trusted"
    assert judged(packed(leaf)) == "attestation_not_trusted"


def test_a_root_past_its_end_at_idps_clock_attests_nothing() -> None:
    """The root's own validity counts too (RFC 5280 6.1.3 (a)(2) over the whole path)."""
    root = root_ca("Short-lived Root", valid=(-timedelta(hours=1), timedelta(hours=1)))
    statement = packed(attestation_certificate(root, MODEL, valid=HOUR_TO_DAY).der)
    assert judged(statement, roots=(root.pem,)) is None
    later = now() + timedelta(hours=2)
    assert judged(statement, roots=(root.pem,), at=later) == "attestation_not_trusted"


def test_a_root_sent_as_its_own_attestation_certificate_is_not_trusted() -> None:
    """A trusted root as x5c's only certificate chains to itself: refused as a CA certificate
    (8.2.1), as an intermediate CA sent as the leaf is."""
    assert judged(packed(ROOT.der)) == "attestation_not_trusted"
    assert judged(packed(intermediate_ca(ROOT).der)) == "attestation_not_trusted"


@pytest.mark.parametrize(
    "certificate",
    [
        pytest.param({"unit": None}, id="no-OU"),
        pytest.param({"unit": "Root CA"}, id="another-OU"),
        pytest.param({"country": None}, id="no-C"),
        pytest.param({"basic_constraints": False}, id="no-basic-constraints"),
    ],
)
def test_a_packed_attestation_certificate_meets_the_8_2_1_requirements(
    certificate: dict[str, Any],
) -> None:
    """WebAuthn L3 8.2.1 (which py_webauthn does not check for packed): Subject C, O, OU
    "Authenticator Attestation", CN, and Basic Constraints with CA false; a certificate of the
    trusted root without one of them is refused."""
    der = attestation_certificate(ROOT, MODEL, **certificate).der
    assert judged(packed(der)) == "attestation_certificate_invalid"


def test_a_critical_aaguid_extension_is_not_trusted() -> None:
    """8.2.1: id-fido-gen-ce-aaguid "MUST NOT be marked as critical"; OpenSSL's chain check
    refuses a critical extension it does not know."""
    der = attestation_certificate(ROOT, MODEL, aaguid_critical=True).der
    assert judged(packed(der)) == "attestation_not_trusted"


def test_fido_u2f_is_held_to_its_chain_but_not_to_the_packed_subject() -> None:
    """8.6 sets no Subject for a U2F certificate (8.2.1 is packed's): one chaining to the root
    is trusted without the OU; one chaining elsewhere, or a CA, is not."""
    zero = "00000000-0000-0000-0000-000000000000"
    der = attestation_certificate(ROOT, None, unit=None).der
    u2f = attestation_object("fido-u2f", {"sig": b"s", "x5c": [der]}, zero)
    assert judged(u2f, zero) is None
    elsewhere = attestation_certificate(root_ca("Other"), None).der
    assert judged(
        attestation_object("fido-u2f", {"sig": b"s", "x5c": [elsewhere]}, zero), zero
    ) == ("attestation_not_trusted")
    ca = attestation_object("fido-u2f", {"sig": b"s", "x5c": [ROOT.der]}, zero)
    assert judged(ca, zero) == "attestation_not_trusted"
