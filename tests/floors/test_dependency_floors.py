"""Dependency floors (docs/security.md, "Dependencies"): every runtime dependency's floor is past
its published advisories, and idp works on the floor versions, all installed together."""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.floors import (
    REPOSITORY,
    floor_pins,
    floor_venv,
    installed_versions,
    pinned_versions,
)

pytestmark = pytest.mark.minutes(5)

PYPROJECT = REPOSITORY / "pyproject.toml"
SECURITY_MD = REPOSITORY / "docs" / "security.md"

#: The first release of each package that fixes each published advisory it has had. A floor below
#: any of them would let a fresh install pick a vulnerable version. docs/security.md explains each.
ADVISORY_FIXES: dict[str, dict[str, str]] = {
    "flask": {
        "CVE-2025-47278 / GHSA-4grg-w6v8-c28g": "3.1.1",
        "CVE-2026-27205 / GHSA-68rp-wp8r-4726": "3.1.3",
    },
    "werkzeug": {
        "CVE-2024-49766 / GHSA-f9vj-2wh5-fj8j": "3.0.6",
        "CVE-2024-49767 / GHSA-q34m-jh98-gwm2": "3.0.6",
        "CVE-2025-66221 / GHSA-hgf8-39gv-g3f2": "3.1.4",
        "CVE-2026-21860 / GHSA-87hc-h4r5-73f7": "3.1.5",
        "CVE-2026-27199 / GHSA-29vq-49wr-vm6x": "3.1.6",
    },
    "jinja2": {
        "CVE-2024-56201 / GHSA-gmj6-6f8f-6699": "3.1.5",
        "CVE-2024-56326 / GHSA-q2x7-8rv6-6q7h": "3.1.5",
        "CVE-2025-27516 / GHSA-cpwx-vrp4-4pq7": "3.1.6",
    },
    "authlib": {
        "CVE-2025-59420 / GHSA-9ggr-2464-2j32": "1.6.4",
        "CVE-2025-61920 / GHSA-pq5p-34cr-23v9": "1.6.5",
        "CVE-2025-62706 / GHSA-g7f3-828f-7h7m": "1.6.5",
        "GHSA-fg6f-75jq-6523": "1.6.6",
        "CVE-2026-28802 / GHSA-7wc2-qxgw-g8gg": "1.6.7",
        "CVE-2026-27962": "1.6.9",
        "CVE-2026-41479": "1.6.10",
        "CVE-2026-41425 / GHSA-jj8c-mmj3-mmgv": "1.6.11",
        "CVE-2026-44681 / GHSA-r95x-qfjj-fjj2": "1.7.1",
    },
    "joserfc": {
        "CVE-2025-65015": "1.4.2",
        "CVE-2026-49852": "1.6.8",
        "GHSA-5jhw-7jv7-qcqq": "1.7.2",
        "CVE-2026-48990 / GHSA-wphv-vfrh-23q5": "1.6.7",
        # Named fixed by the 1.7.4 update of distributions; the first fixed release may be earlier.
        "GHSA-gg9x-qcx2-xmrh": "1.7.4",
    },
    "cryptography": {
        "CVE-2024-12797 / GHSA-79v4-65xg-pq4g": "44.0.1",
        "CVE-2026-26007 / GHSA-r6ph-v2qm-q3c2": "46.0.5",
        "GHSA-m959-cc7f-wv43": "46.0.6",
        "CVE-2026-39892": "46.0.7",
        "GHSA-537c-gmf6-5ccf": "48.0.1",
        "CVE-2026-69247 / GHSA-g6cj-pr64-35w5": "50.0.0",
    },
    "pyopenssl": {
        "CVE-2026-27448": "26.0.0",
        "CVE-2026-27459": "26.0.0",
    },
    "gunicorn": {
        "CVE-2024-1135 / GHSA-w3h3-4rj7-4ph4": "22.0.0",
        "CVE-2024-6827 / GHSA-hc5x-x2vx-497g": "23.0.0",
    },
    "idna": {
        "CVE-2024-3651 / GHSA-jjg7-2v4v-x38h": "3.7",
    },
    "redis": {
        "CVE-2023-28858 / GHSA-24wv-mv5m-xv4h": "4.5.4",
        "CVE-2023-28859 / GHSA-8fww-64cx-x8p5": "4.5.4",
    },
}

#: The unit tests and the functional modules that exercise what the floors are about, in one
#: process on SQLite and PostgreSQL (about two minutes). The rest of tests/functional tests idp's
#: own logic with the same libraries and would triple the time (the whole suite must stay well
#: under 15 minutes); the concurrency modules in particular are slow and test idp, not a floor.
FLOOR_RUN = (
    "tests/unit",
    # Authlib: the authorization endpoint, redirect validation and its error redirects.
    "tests/functional/test_authorize_errors.py",
    # Authlib and joserfc: PKCE (including a verifier without a challenge, RFC 9700 4.8.2, which
    # Authlib refuses only from 1.7), client authentication, private_key_jwt assertions.
    "tests/functional/test_token_errors.py",
    # joserfc and cryptography: ID tokens, access tokens, userinfo, introspection, revocation.
    "tests/functional/test_tokens_and_claims.py",
    # Discovery and the JWKS (joserfc key export).
    "tests/functional/test_well_known.py",
    # Authlib's RP-initiated logout endpoint (Authlib 1.7 and later).
    "tests/functional/test_logout.py",
    # webauthn and cbor: registration and assertion ceremonies.
    "tests/functional/test_passkeys.py",
    # argon2-cffi, pyotp, zxcvbn, Flask-WTF: passwords, TOTP and their forms.
    "tests/functional/test_fallback.py",
    # The whole flow once, Flask, Werkzeug and SQLAlchemy in every step.
    "tests/functional/test_happy_path.py",
    # Click and Alembic: the command line, and the migrations against the models on PostgreSQL.
    "tests/functional/test_cli.py",
    # granian: `idp serve` as a live server (one test; the other starts two servers).
    "tests/functional/test_serving.py::test_a_second_server_on_a_taken_port_refuses_to_start",
)

#: The unit modules that read the repository's own text (its documents, its imports, its file
#: sizes, its Dockerfile, the code's event names): they pass or fail alike on any version of a
#: library, and took a tenth of the floor run.
SOURCE_ONLY = (
    "tests/unit/test_docs_references.py",
    "tests/unit/test_import_graph.py",
    "tests/unit/test_module_sizes.py",
    "tests/unit/test_dockerfile.py",
    "tests/unit/test_activity.py",
)


def runtime_floors() -> dict[str, Version]:
    floors = {}
    for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        (floor,) = (spec.version for spec in requirement.specifier if spec.operator == ">=")
        floors[requirement.name.lower()] = Version(floor)
    return floors


def test_every_runtime_dependency_has_one_floor() -> None:
    pins = floor_pins(PYPROJECT)
    assert len(pins) == len(runtime_floors())


@pytest.mark.parametrize("package", sorted(ADVISORY_FIXES))
def test_floor_is_past_every_published_advisory(package: str) -> None:
    floor = runtime_floors()[package]
    behind = {
        advisory: fixed
        for advisory, fixed in ADVISORY_FIXES[package].items()
        if floor < Version(fixed)
    }
    assert not behind, f"{package}>={floor} allows versions with {behind}"


def test_security_md_names_every_floor() -> None:
    """The auditor's list and pyproject.toml say the same thing."""
    text = SECURITY_MD.read_text()
    missing = [f"{name}>={floor}" for name, floor in runtime_floors().items()]
    missing = [floor for floor in missing if f"`{floor}`" not in text]
    assert not missing, f"docs/security.md does not list {missing}"


@pytest.mark.floors
def test_unit_and_protocol_tests_pass_on_the_floor_versions() -> None:
    venv = floor_venv()
    pinned = {name: Version(version) for name, version in pinned_versions(venv.pins).items()}
    installed = installed_versions(venv, sorted(pinned))
    assert {name: Version(version) for name, version in installed.items()} == pinned
    env = venv.env(
        REPOSITORY,
        {
            name: value
            for name, value in os.environ.items()
            # The outer run's pytest-xdist and coverage settings are not the inner run's.
            if not name.startswith(("PYTEST_", "COV_"))
        },
    )
    skipped = [f"--ignore={path}" for path in SOURCE_ONLY]
    pytest_args = ["-q", "-p", "no:cacheprovider", "-n", "0", "-m", "not floors", *skipped]
    pytest_args += FLOOR_RUN
    result = subprocess.run(
        [str(venv.python), "-m", "pytest", *pytest_args],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
    exit_code = result.returncode  # (not the whole CompletedProcess in the failure message)
    assert exit_code == 0, f"on the floor versions ({', '.join(venv.pins)}):\n{tail}"
