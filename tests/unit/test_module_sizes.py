"""No module of idp/ is over 450 lines: a module that grows past it holds more than one idea, and
is split by what it holds."""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "idp"
MAX_LINES = 450
#: Alembic migrations are generated, and read one at a time.
EXEMPT_DIRECTORIES = ("migrations",)


def module_lengths() -> dict[str, int]:
    lengths = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] in EXEMPT_DIRECTORIES:
            continue
        lengths[relative.as_posix()] = len(path.read_text(encoding="utf-8").splitlines())
    return lengths


def test_no_module_is_over_450_lines() -> None:
    too_long = {name: length for name, length in module_lengths().items() if length > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"
