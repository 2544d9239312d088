"""The migrations' files keep the convention ``idp.database.newest_revision`` reads the newest
revision off: each file is named after its revision, four digits in order, and revises the one
before. A server whose schema is at that revision starts without loading Alembic; a newer
migration that broke the convention would leave its database un-upgraded."""

from __future__ import annotations

import ast
from pathlib import Path

from alembic.script import ScriptDirectory

from idp.database import MIGRATION_FILE, MIGRATIONS, alembic_config, newest_revision

VERSIONS = MIGRATIONS / "versions"
REVISION_NAMES = ("revision", "down_revision")


def _assigned(path: Path) -> dict[str, object]:
    """The module-level ``revision`` and ``down_revision`` a migration assigns."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            for target in targets:
                if isinstance(target, ast.Name) and target.id in REVISION_NAMES:
                    assert node.value is not None, path.name
                    found[target.id] = ast.literal_eval(node.value)
    return found


def test_every_migration_is_named_after_its_revision_and_revises_the_one_before() -> None:
    files = sorted(path for path in VERSIONS.glob("*.py"))
    assert files
    unnamed = [path.name for path in files if not MIGRATION_FILE.fullmatch(path.name)]
    assert unnamed == [], "a migration's file is its four-digit revision, then its name"
    previous: str | None = None
    for number, path in enumerate(files, start=1):
        assigned = _assigned(path)
        assert assigned["revision"] == path.name[:4] == f"{number:04d}", path.name
        assert assigned["down_revision"] == previous, path.name
        previous = path.name[:4]


def test_the_newest_revision_is_alembic_s_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [newest_revision()]
