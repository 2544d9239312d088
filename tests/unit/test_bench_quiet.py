"""The benchmark judges whether its run was a quiet machine's from its two yardsticks, each measured
at both ends of the run (bench/report.py, docs/performance.md "A quiet machine")."""

from __future__ import annotations

import json

import pytest

from bench.report import QUIET_DRIFT, Yardstick, quiet, render_steadiness, steadiness


def test_a_yardstick_moved_by_the_larger_end_over_the_smaller() -> None:
    assert Yardstick("hello-world", 8000.0, 10000.0).moved == pytest.approx(0.25)
    assert Yardstick("hello-world", 10000.0, 8000.0).moved == pytest.approx(0.25)
    assert Yardstick("Argon2id", 40.0, 40.0).moved == 0


def test_a_run_is_quiet_only_when_every_yardstick_stayed_within_the_drift() -> None:
    steady = Yardstick("hello-world", 7000.0, 7000.0 * (1 + QUIET_DRIFT / 2))
    assert quiet([steady, Yardstick("Argon2id", 40.0, 41.0)])
    # One yardstick past the line is enough: the ratios are judged against both.
    assert not quiet([steady, Yardstick("Argon2id", 40.0, 40.0 * (1 + 2 * QUIET_DRIFT))])
    assert not quiet([Yardstick("hello-world", 9259.3, 5952.0), Yardstick("Argon2id", 40.0, 40.0)])


def test_the_json_and_the_report_give_both_ends_and_the_verdict() -> None:
    yardsticks = [Yardstick("hello-world", 9259.3, 5952.0), Yardstick("Argon2id", 51.5, 50.9)]
    summary = json.loads(json.dumps(steadiness(yardsticks)))  # JSON as --json writes it
    assert summary == {
        "yardsticks": {
            "hello-world": {"before": 9259.3, "after": 5952.0, "moved": 0.556},
            "Argon2id": {"before": 51.5, "after": 50.9, "moved": 0.012},
        },
        "quiet": False,
    }
    text = render_steadiness(yardsticks)
    assert "hello-world 9,259.3 then 5,952.0 (moved 56 %)" in text
    assert "not a quiet machine" in text
    assert "This run: a quiet machine." in render_steadiness(yardsticks[1:])
