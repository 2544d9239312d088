"""Fixtures of the interop tests: a live idp and the node toolchain of the openid-client RP."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live import IDP_BIN, INTEROP_DIR, LiveIdp, free_port, start_live_idp


@pytest.fixture(scope="module")
def live_idp() -> Iterator[LiveIdp]:
    if not IDP_BIN.exists():
        pytest.fail(f"{IDP_BIN} does not exist: install idp into the venv (pip install -e .)")
    with (
        tempfile.TemporaryDirectory(prefix="idp-interop-") as tmp,
        # A device polls every second (not 5): the device flow's case waits less for its answer.
        start_live_idp(Path(tmp), env={"IDP_DEVICE_POLL_INTERVAL": "1"}) as idp,
    ):
        yield idp


@pytest.fixture(scope="session")
def node_bin() -> str:
    """The node binary, with openid-client and jose installed under tests/interop."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the interop tests need Node.js 20 or newer")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()
    major = int(version.lstrip("v").split(".")[0])
    if major < 20:
        pytest.fail(f"node {version} is too old: the interop tests need Node.js 20 or newer")
    for package in ("openid-client", "jose"):
        if not (INTEROP_DIR / "node_modules" / package / "package.json").exists():
            pytest.fail(
                f"tests/interop/node_modules/{package} is missing: run `npm ci` in "
                "tests/interop (scripts/test.sh does it)"
            )
    return node


@pytest.fixture(scope="module")
def rp_base() -> str:
    """Origin of the (never contacted) relying party: redirects to it are not followed."""
    return f"http://localhost:{free_port()}"
