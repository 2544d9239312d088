"""The benchmark's smoke mode runs end to end so that bench/ never rots (timings are not checked:
they belong to docs/performance.md, not to a test)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.minutes(3)

ROOT = Path(__file__).resolve().parents[2]

#: The JSON summary's figures per database (bench/README.md, "The JSON summary").
JSON_FIGURES = [
    "passkey_sign_in",
    "password_totp_sign_in",
    "refresh",
    "client_credentials",
    "userinfo",
    "introspection",
    "passkey_p99_ms_at_70_percent",
]

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
def test_bench_smoke_prints_every_figure_on_both_databases(tmp_path: Path) -> None:
    """One server (granian, the default) keeps the smoke short: gunicorn serves idp in
    tests/functional/test_serving.py and test_graceful_shutdown.py. The same run writes the JSON
    summary (``--json``)."""
    env = {**os.environ, "IDP_TEST_POSTGRES_URL": POSTGRES_URL}
    summary_path = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(summary_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    # Both servers up, the scenarios taking turns between the databases, the order alternating
    # (bench/run.py ``interleaved``): seven scenarios each, then the end of each generator.
    turns = [line for line in completed.stderr.splitlines() if line in ("sqlite:", "postgresql:")]
    assert turns[:4] == ["sqlite:", "postgresql:", "postgresql:", "sqlite:"], turns
    assert turns.count("sqlite:") == turns.count("postgresql:") == 7 + 1, turns
    report = completed.stdout
    assert re.search(r"Argon2id verification alone .*: [\d.]+ per CPU-second", report)
    assert re.search(
        r"Yardsticks at the start and at the end of the run: hello-world [\d,.]+ then [\d,.]+ "
        r"\(moved \d+ %\); Argon2id [\d,.]+ then [\d,.]+ \(moved \d+ %\)\. "
        r"This run: (a quiet machine|not a quiet machine: .*)\.$",
        report,
        re.MULTILINE,
    ), report
    every_section = re.split(r"^## ", report, flags=re.MULTILINE)[1:]
    comparison = [s for s in every_section if s.startswith("PostgreSQL against SQLite, granian")]
    assert len(comparison) == 1, report
    sections = [s for s in every_section if s not in comparison]
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
        # Each figure: absolute, ratio, target, met (bench/report.py).
        passkey = (
            r"\| passkey sign-in \(code flow\) \| [\d,.]+ \| [\d.]+ x hello \| >= 0\.03 x hello"
        )
        assert re.search(passkey + r" \| (yes|no) \|", section)
    assert_json_summary(json.loads(summary_path.read_text()))


def assert_json_summary(summary: dict[str, object]) -> None:
    """The names bench/README.md documents, each a positive number."""

    def positive(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and value > 0

    assert positive(summary["hello_world"]), summary
    assert positive(summary["argon2id"]), summary
    # Both ends of each yardstick and the verdict on the machine (bench/report.py, QUIET_DRIFT).
    yardsticks = summary["yardsticks"]
    assert isinstance(yardsticks, dict)
    assert sorted(yardsticks) == ["Argon2id", "hello-world"]
    for ends in yardsticks.values():
        assert positive(ends["before"]), yardsticks
        assert positive(ends["after"]), yardsticks
        assert ends["moved"] >= 0, yardsticks
    assert isinstance(summary["quiet"], bool), summary
    for database in ("sqlite", "postgresql"):
        figures = summary[database]
        assert isinstance(figures, dict), summary
        for key in JSON_FIGURES:
            assert positive(figures.get(key)), (database, key, figures)


@pytest.mark.postgres
def test_compare_serves_each_side_on_the_database_it_names() -> None:
    """``bench.compare HEAD HEAD --after-database postgresql``: PostgreSQL against SQLite in
    interleaved rounds (docs/performance.md), each side on its own database."""
    env = {**os.environ, "IDP_TEST_POSTGRES_URL": POSTGRES_URL}
    # 200 grants a side and round: /proc counts server CPU in 10 ms ticks, and 20 (scale 0.02)
    # once cost a side less than one, which is no figure at all (nan).
    completed = subprocess.run(
        [sys.executable, "-m", "bench.compare", "HEAD", "HEAD", "--after-database", "postgresql",
         "--scenarios", "client_credentials", "--rounds", "2", "--scale", "0.2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert re.search(r"^before: HEAD at http://localhost:\d+ on SQLite$", completed.stderr, re.M)
    assert re.search(r"^after: HEAD at http://localhost:\d+ on postgresql", completed.stderr, re.M)
    assert "errors" not in completed.stderr, completed.stderr[-4000:]
    report = completed.stdout
    assert "before = `HEAD (sqlite)`, after = `HEAD (postgresql)`" in report, report
    row = next(line for line in report.splitlines() if line.startswith("| client_credentials |"))
    figures = [float(cell.replace(",", "")) for cell in row.split("|")[2:5]]
    assert min(figures) > 0, row  # before, after and their ratio


def test_anatomy_times_each_request_of_a_passkey_sign_in(tmp_path: Path) -> None:
    """``bench.anatomy --per-request N``: the thread CPU of the sign-in's three requests, the
    figures "The thirty-fourth round" of docs/performance-rounds.md reports (each a number; its
    size belongs to the journal, not to a test). Its database goes with the run."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.anatomy", "--per-request", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env=os.environ | {"TMPDIR": str(tmp_path)},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert list(tmp_path.iterdir()) == []
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("|") for line in completed.stdout.splitlines())
        if len(cells) == 4 and not cells[1].strip().startswith(("request", "---"))
    }
    paths = ["/authorize", "/login/passkey/verify", "/token"]
    assert list(rows)[:3] == paths, completed.stdout
    assert all(float(value) > 0 for value in rows.values()), completed.stdout
