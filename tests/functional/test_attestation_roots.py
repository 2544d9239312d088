"""Verified attestation (docs/configuration.md, ``webauthn_attestation_roots``; WebAuthn L3 7.1
steps 20 to 23): with roots configured, only a passkey whose attestation chains to them is
saved, and the AAGUID the allow list compares is the one its attesting key certified. Through
the portal's "Add a passkey" (options, create(), store), on a database of its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import AttestationObject
from flask import Flask

from idp.app import create_app
from idp.extensions import db
from idp.models import Passkey
from idp.models.base import utcnow
from idp.settings import SettingsError
from tests.conftest import sqlite_app
from tests.functional.test_admin_policy import (
    GOOGLE_PASSWORD_MANAGER,
    YUBIKEY_5,
    failure_reasons,
    password_browser,
    set_policy,
)
from tests.functional.test_fallback import password_step
from tests.support.admin import passkey_browser
from tests.support.attestation_ca import attestation_certificate, intermediate_ca, root_ca
from tests.support.authenticator import SoftAuthenticator
from tests.support.certificates import Issued
from tests.support.clock import FrozenClock, app_clock
from tests.support.factories import create_user, rows

#: The vendor whose root the deployment trusts.
VENDOR = root_ca("Example Vendor Root")


@pytest.fixture
def roots_app(tmp_path: Path) -> Iterator[Flask]:
    """An app trusting VENDOR's root, allowing only the YubiKey 5 model."""
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(VENDOR.pem)
    app = sqlite_app(tmp_path, webauthn_attestation_roots=str(roots))
    set_policy(app, aaguid_allow_list=[YUBIKEY_5])
    yield app
    with app.app_context():
        db.engine.dispose()


def genuine(model: str = YUBIKEY_5, root: Issued = VENDOR) -> SoftAuthenticator:
    """A security key of ``model`` whose attestation certificate ``root`` issued for it."""
    return SoftAuthenticator(
        aaguid=model, attestation_certificate=attestation_certificate(root, model)
    )


def test_an_intermediate_alone_in_the_roots_file_stops_idp_at_start_up(tmp_path: Path) -> None:
    """A vendor's intermediate where its root belongs would refuse every registration at run time
    (no path ends at a certificate that is not self-signed): the application is not made, and the
    refusal names the file and the certificate (idp.services.attestation ``load_roots``)."""
    intermediate = intermediate_ca(VENDOR)
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(intermediate.pem)
    with pytest.raises(SettingsError, match="not self-signed") as refused:
        create_app({"database_url": "sqlite://", "webauthn_attestation_roots": str(roots)})
    assert str(roots) in str(refused.value)
    assert intermediate.certificate.subject.rfc4514_string() in str(refused.value)


def test_with_roots_registration_asks_for_direct_attestation(roots_app: Flask) -> None:
    pages = password_browser(roots_app, create_user(roots_app))
    options = pages.registration_options().get_json()
    assert options["publicKey"]["attestation"] == "direct"


def test_a_passkey_attested_by_a_trusted_root_is_saved(roots_app: Flask) -> None:
    pages = password_browser(roots_app, create_user(roots_app))
    saved = pages.add_passkey(genuine())
    assert saved.status_code == 201, saved.text
    [stored] = rows(roots_app, Passkey)
    assert stored.aaguid == YUBIKEY_5


@pytest.mark.parametrize(
    ("authenticator", "reason"),
    [
        pytest.param(SoftAuthenticator(aaguid=YUBIKEY_5), "attestation_not_trusted", id="none"),
        pytest.param(
            SoftAuthenticator(aaguid=YUBIKEY_5, self_attestation=True),
            "attestation_not_trusted",
            id="self-attestation",
        ),
        pytest.param(
            genuine(root=root_ca("Attacker Root")), "attestation_not_trusted", id="untrusted-root"
        ),
        pytest.param(
            SoftAuthenticator(
                aaguid=YUBIKEY_5,
                attestation_certificate=attestation_certificate(VENDOR, GOOGLE_PASSWORD_MANAGER),
            ),
            "attestation_aaguid_mismatch",
            id="another-models-certificate",
        ),
        pytest.param(
            SoftAuthenticator(aaguid=YUBIKEY_5, attestation_certificate=VENDOR),
            "attestation_not_trusted",
            id="the-root-as-its-own-leaf",
        ),
        pytest.param(
            SoftAuthenticator(
                aaguid=YUBIKEY_5,
                attestation_certificate=attestation_certificate(VENDOR, YUBIKEY_5, unit=None),
            ),
            "attestation_certificate_invalid",
            id="packed-certificate-without-the-8.2.1-subject",
        ),
        pytest.param(
            SoftAuthenticator(
                attestation_certificate=attestation_certificate(VENDOR, YUBIKEY_5),
                attestation_format="fido-u2f",
            ),
            "attestation_aaguid_mismatch",
            id="fido-u2f-certified-for-an-allowed-model",
        ),
    ],
)
def test_a_claimed_aaguid_without_a_trusted_attestation_is_refused(
    roots_app: Flask, authenticator: SoftAuthenticator, reason: str
) -> None:
    """The allow list admits YubiKey 5 only; each of these claims that AAGUID without proof a
    root the deployment trusts stands behind: refused, audited with the reason, nothing saved,
    and the page says why trying again will not help."""
    pages = password_browser(roots_app, create_user(roots_app))
    refused = pages.add_passkey(authenticator)
    assert refused.status_code == 400
    assert "approved authenticators" in refused.get_json()["message"]
    assert failure_reasons(roots_app, "passkey.registered") == [reason]
    assert rows(roots_app, Passkey) == []


#: A validity from an hour ago to a day from now.
HOUR_TO_DAY = (-timedelta(hours=1), timedelta(days=1))


def test_the_chain_is_judged_at_idps_clock(roots_app: Flask) -> None:
    """RFC 5280 6.1.3 (a)(2) at idp's clock (docs/architecture.md, "The one clock"), not the wall
    clock py_webauthn's own chain check reads: with idp's clock two days on, a certificate valid
    for one day no longer attests; one that becomes valid in an hour does, two hours on."""
    for number, (valid, moved, status) in enumerate((
        (HOUR_TO_DAY, timedelta(days=2), 400),
        ((timedelta(hours=1), timedelta(days=1)), timedelta(hours=2), 201),
    )):  # fmt: skip
        key = SoftAuthenticator(aaguid=YUBIKEY_5, attestation_certificate=attestation_certificate(
            VENDOR, YUBIKEY_5, valid=valid))  # fmt: skip
        with app_clock(roots_app, FrozenClock(utcnow() + moved)):
            pages = password_browser(roots_app, create_user(roots_app, f"u{number}@example.com"))
            assert pages.add_passkey(key).status_code == status
    assert failure_reasons(roots_app, "passkey.registered") == ["attestation_not_trusted"]
    assert len(rows(roots_app, Passkey)) == 1


def test_an_intermediate_in_x5c_attests_while_it_is_valid_at_idps_clock(roots_app: Flask) -> None:
    """8.2: x5c is the attestation certificate "followed by its certificate chain": a vendor's
    intermediate completes the chain to the root; once idp's clock is past the intermediate's
    end, the leaf and the root still valid, the chain no longer attests."""
    intermediate = intermediate_ca(VENDOR, valid=(-timedelta(hours=1), timedelta(hours=1)))
    leaf = attestation_certificate(intermediate, YUBIKEY_5, valid=HOUR_TO_DAY)
    for number, (moved, status) in enumerate(((timedelta(0), 201), (timedelta(hours=2), 400))):
        key = SoftAuthenticator(aaguid=YUBIKEY_5, attestation_certificate=leaf,
                                attestation_chain=(intermediate,))  # fmt: skip
        with app_clock(roots_app, FrozenClock(utcnow() + moved)):
            pages = password_browser(roots_app, create_user(roots_app, f"u{number}@example.com"))
            assert pages.add_passkey(key).status_code == status
    assert failure_reasons(roots_app, "passkey.registered") == ["attestation_not_trusted"]


def test_a_fido_u2f_key_has_no_model_the_allow_list_could_name(roots_app: Flask) -> None:
    """8.6: a U2F statement's AAGUID is zero (py_webauthn requires it), so with an allow list it
    is refused (above); without one, a U2F key whose certificate chains to the root is saved,
    under the zero AAGUID."""
    set_policy(roots_app, aaguid_allow_list=[])
    key = SoftAuthenticator(attestation_certificate=attestation_certificate(VENDOR, None),
                            attestation_format="fido-u2f")  # fmt: skip
    pages = password_browser(roots_app, create_user(roots_app))
    assert pages.add_passkey(key).status_code == 201
    [stored] = rows(roots_app, Passkey)
    assert stored.aaguid == "00000000-0000-0000-0000-000000000000"


def test_the_allow_list_still_applies_to_a_trusted_attestation(roots_app: Flask) -> None:
    pages = password_browser(roots_app, create_user(roots_app))
    refused = pages.add_passkey(genuine(GOOGLE_PASSWORD_MANAGER))
    assert refused.status_code == 400
    assert failure_reasons(roots_app, "passkey.registered") == ["authenticator_not_allowed"]


def test_without_roots_the_claimed_aaguid_is_taken_as_a_filter(app: Flask) -> None:
    """No roots: the policy's conveyance ("none") and the claimed AAGUID, as documented."""
    set_policy(app, aaguid_allow_list=[YUBIKEY_5])
    try:
        pages = password_browser(app, create_user(app))
        assert pages.registration_options().get_json()["publicKey"]["attestation"] == "none"
        assert pages.add_passkey(SoftAuthenticator(aaguid=YUBIKEY_5)).status_code == 201
    finally:
        app.extensions["idp"].policy_cache.invalidate()


def test_with_roots_the_prompt_after_a_password_sign_in_tries_no_conditional_create(
    roots_app: Flask, app: Flask
) -> None:
    """WebAuthn L3 5.1.3: the password manager's conditional create attests nothing, so with
    roots it would make a passkey idp refuses: the prompt offers the button's ceremony only."""
    for each, conditional in ((roots_app, False), (app, True)):
        set_policy(each, passkey_prompt=True)
        try:
            user = create_user(each)
            browser = each.test_client()
            password_step(browser, user.email, user.password)
            page = browser.get("/login/passkey-prompt")
            assert page.status_code == 200
            assert ("data-conditional-create" in page.text) is conditional
        finally:
            each.extensions["idp"].policy_cache.invalidate()


def test_the_policy_page_says_when_attestation_roots_apply(roots_app: Flask, app: Flask) -> None:
    """The attestation choice reads "none" by default; with roots the registrations ask for
    "direct" regardless, and the admin reading the page is told so."""
    for each, told in ((roots_app, True), (app, False)):
        admin = passkey_browser(each, "root@example.com", authenticator=genuine())
        page = admin.browser.get("/admin/policy")
        assert page.status_code == 200
        assert ("data-attestation-roots" in page.text) is told


def restated(credential: dict[str, Any], fmt: str, statement: dict[str, Any]) -> dict[str, Any]:
    """``credential`` with its attestation replaced by one of format ``fmt`` holding
    ``statement``: the authenticator data as it was."""
    answer = credential["response"]
    made = AttestationObject(websafe_decode(answer["attestationObject"]))
    replaced = bytes(AttestationObject.create(fmt, made.auth_data, statement))
    return {**credential, "response": {**answer, "attestationObject": websafe_encode(replaced)}}


def tpm_statement(credential: dict[str, Any], **statement: Any) -> dict[str, Any]:
    """``credential`` with a ``tpm`` attestation (WebAuthn L3 8.3) holding ``statement``, nothing
    else a TPM would have signed."""
    return restated(credential, "tpm", {
        "ver": "2.0", "alg": -7, "sig": b"s", "x5c": [VENDOR.der], "certInfo": b"\x00" * 8,
        "pubArea": b"\x00" * 8, **statement,
    })  # fmt: skip


@pytest.mark.parametrize("roots", [False, True], ids=["without-roots", "with-roots"])
@pytest.mark.parametrize(
    "statement",
    [
        pytest.param({"pubArea": b"\xff\xff" + b"\x00" * 6}, id="unknown-pubArea-type"),
        pytest.param({"pubArea": b"\x00\x23\xff\xff" + b"\x00" * 4}, id="unknown-nameAlg"),
    ],
)
def test_a_tpm_statement_py_webauthn_cannot_parse_is_a_refusal(
    app: Flask, roots_app: Flask, roots: bool, statement: dict[str, Any]
) -> None:
    """py_webauthn's TPM parsers raise KeyError and the like on structures they do not know,
    outside its exception family: uncaught, a 500 that rolled back the spent challenge and the
    audit. A refusal, audited, nothing stored, whether or not roots are set (the chain is
    checked after py_webauthn, so anyone reaches its parsers)."""
    each = roots_app if roots else app
    pages = password_browser(each, create_user(each))
    ceremony = pages.registration_options().get_json()
    credential = tpm_statement(genuine().create(ceremony["publicKey"]), **statement)
    refused = pages.register(ceremony["challenge_id"], credential)
    assert refused.status_code == 400, refused.text
    assert failure_reasons(each, "passkey.registered") == ["malformed_attestation"]
    assert rows(each, Passkey) == []


def test_a_format_py_webauthn_does_not_know_is_audited_as_such(app: Flask) -> None:
    """WebAuthn L3 7.1 step 20: an fmt matching no supported format fails the ceremony. The audit
    says so (py_webauthn's "Unsupported attestation type" read as a wrong ceremony type before,
    which sent an admin looking at the client data)."""
    pages = password_browser(app, create_user(app))
    ceremony = pages.registration_options().get_json()
    credential = restated(genuine().create(ceremony["publicKey"]), "made-up", {})
    assert pages.register(ceremony["challenge_id"], credential).status_code == 400
    assert failure_reasons(app, "passkey.registered") == ["attestation_format_unsupported"]


def test_a_root_that_expires_while_idp_runs_makes_the_health_document_degraded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The roots are checked at start-up; one that expires while idp runs attests nothing from
    then on (every certificate of a path is judged at idp's clock, RFC 5280 6.1.3 (a)(2)), and
    every registration with it was refused without a word to the operator. The health document
    (/healthz/dependencies, where alerts look) names the expired root and says ``degraded``,
    logged at WARNING; the node stays ready (sign-ins and tokens go on), and a root still valid
    is ``ok``."""
    ending = root_ca("Ending Vendor Root", valid=(-timedelta(days=30), timedelta(hours=1)))
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(VENDOR.pem + ending.pem)
    token = "scrape-" + "r" * 40
    app = sqlite_app(tmp_path, webauthn_attestation_roots=str(roots), metrics_token=token)
    browser = app.test_client()
    scrape = {"Authorization": f"Bearer {token}"}
    clock = FrozenClock(utcnow())
    with app_clock(app, clock):
        health = browser.get("/healthz/dependencies", headers=scrape).get_json()
        assert health["status"] == "ok"
        assert health["attestation_roots"] == {"state": "ok", "expired": []}
        clock.advance(timedelta(hours=2))  # VENDOR's root is valid for a day
        answer = browser.get("/healthz/dependencies", headers=scrape)
        assert answer.status_code == 200
        health = answer.get_json()
        assert (health["status"], health["ready"]) == ("degraded", True)
        assert health["attestation_roots"]["state"] == "expired"
        [expired] = health["attestation_roots"]["expired"]
        assert "Ending Vendor Root" in expired
        assert "Ending Vendor Root" in caplog.text
        assert browser.get("/readyz").status_code == 200
    with app.app_context():
        db.engine.dispose()
