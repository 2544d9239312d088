"""The benchmark's smoke mode runs end to end so that bench/ never rots (timings are not checked:
they belong to docs/performance.md, not to a test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]

FIGURES = [
    "passkey sign-in (code flow)",
    "passkey at 70 % load",
    "password + TOTP sign-in",
    "refresh grant (rotation)",
    "client credentials",
    "userinfo",
    "introspection",
    "hello-world (Flask)",
]


@pytest.mark.postgres
def test_bench_smoke_prints_every_figure_on_both_databases() -> None:
    """One server (granian, the default) keeps the smoke short: gunicorn serves idp in
    tests/functional/test_serving.py and test_graceful_shutdown.py."""
    env = {**os.environ, "IDP_TEST_POSTGRES_URL": POSTGRES_URL}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = completed.stdout
    assert re.search(r"Argon2id verification alone .*: [\d.]+ per CPU-second", report)
    sections = re.split(r"^## ", report, flags=re.MULTILINE)[1:]
    titles = sorted(section.splitlines()[0] for section in sections)
    assert titles == ["postgresql, granian", "sqlite, granian"]
    for section in sections:
        for figure in FIGURES:
            row = next(
                (line for line in section.splitlines() if line.startswith(f"| {figure} |")), None
            )
            assert row is not None, f"{figure} missing in {section.splitlines()[0]}"
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            done, errors = int(cells[-2]), int(cells[-1])
            assert done > 0, row
            assert errors == 0, row
        assert re.search(r"Resident memory: workers [\d.]+(, [\d.]+)* MiB", section)
        assert re.search(r"SQL per passkey sign-in \(code flow\): \d+ writes", section)
        assert re.search(r"SQL per password \+ TOTP sign-in: \d+ writes", section)
        assert "error:" not in section
