"""The clock idp decides with (idp.clock): the system's time in UTC, or a frozen one for tests."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from idp.clock import SYSTEM_CLOCK, Clock, FrozenClock
from idp.models.base import utcnow


def test_the_system_clock_reads_aware_utc_like_utcnow() -> None:
    before = utcnow()
    now = SYSTEM_CLOCK.now()
    after = utcnow()
    assert now.tzinfo is UTC
    assert before <= now <= after


def test_a_frozen_clock_stands_still_until_advanced() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock = FrozenClock(at)
    assert isinstance(clock, Clock)
    assert clock.now() == clock.now() == at
    clock.advance(timedelta(minutes=15))
    assert clock.now() == at + timedelta(minutes=15)
    clock.set(at)
    assert clock.now() == at


def test_a_frozen_clock_keeps_utc_and_refuses_a_naive_time() -> None:
    paris = timezone(timedelta(hours=1))
    clock = FrozenClock(datetime(2030, 1, 1, 12, tzinfo=paris))
    assert clock.now() == datetime(2030, 1, 1, 11, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        FrozenClock(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2030, 1, 1))


TESTS = Path(__file__).resolve().parents[1]
#: The calls that replace an attribute: monkeypatch.setattr, setattr, unittest.mock's patch and
#: patch.object.
PATCHING = frozenset({"setattr", "patch", "object"})


def _patches_of_utcnow(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        arguments = [*node.args, *(keyword.value for keyword in node.keywords)]
        if name in PATCHING and any("utcnow" in ast.unparse(arg) for arg in arguments):
            lines.append(node.lineno)
    return lines


def test_the_audit_finds_a_patched_utcnow() -> None:
    source = (
        'monkeypatch.setattr("idp.web.utcnow", frozen)\n'
        "monkeypatch.setattr(base, 'utcnow', frozen)\n"
        'mock.patch.object(base, "utcnow")\n'
        "monkeypatch.setattr(web, 'clock', frozen)\n"
    )
    assert _patches_of_utcnow(source) == [1, 2, 3]


def test_no_test_patches_utcnow() -> None:
    """Tests move time by setting the application's clock (the ``clock`` fixture,
    tests/support/clock.py) or a service's, never by replacing ``utcnow`` in a module: a patch
    reaches only the modules it names, and the code under test may read the time elsewhere."""
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        if "node_modules" not in path.parts
        for line in _patches_of_utcnow(path.read_text(encoding="utf-8"))
    ]
    assert found == [], f"utcnow patched (set the app's clock instead): {found}"
