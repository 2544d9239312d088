"""The ``idp`` command line as a package (idp/cli/): one module per command group, each imported
only when a command line names it, typed helpers, and modules a reader can take in whole."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from idp.cli import COMMANDS, main
from tests.support.cli import last_line_after_init

PACKAGE = Path(__file__).resolve().parents[2] / "idp" / "cli"
PYPROJECT = PACKAGE.parents[1] / "pyproject.toml"
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_every_module_is_short(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_every_function_says_what_it_returns(path: Path) -> None:
    """A helper that returns ``Any`` (or says nothing, which is the same to mypy) hides from its
    callers what they hold."""
    untyped = [
        f"{node.name} (line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.returns is None or ast.unparse(node.returns).strip("'\"") == "Any")
    ]
    assert untyped == []


def test_every_command_is_where_the_table_says() -> None:
    context = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(context, name)
        assert command is not None
        assert command.name == name
    assert main.list_commands(context) == sorted(COMMANDS)


def _imported_after(command_lines: list[list[str]], which: str) -> list[str]:
    """The modules ``which`` names (a condition on ``name``) that a fresh interpreter has
    imported once ``idp`` ran each of ``command_lines``: this one has imported everything."""
    script = (
        "import sys\n"
        "from idp.cli import main\n"
        f"for line in {command_lines!r}:\n"
        "    main(line, standalone_mode=False)\n"
        f"print(' '.join(sorted(name for name in sys.modules if {which})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return completed.stdout.splitlines()[-1].split()


def test_a_command_imports_its_own_group_only() -> None:
    """``idp users --help`` loads the users group, not the others."""
    loaded = _imported_after([["users", "--help"]], "name.startswith('idp.cli.')")
    assert loaded == ["idp.cli.common", "idp.cli.users"]


def test_help_imports_no_application() -> None:
    """``idp --help`` and a group's help build no application, so they import none of it: not
    Flask, SQLAlchemy or idp's app factory (idp/__init__.py names ``create_app`` and imports
    idp.app only when it is asked for)."""
    application = "name.split('.')[0] in ('flask', 'sqlalchemy') or name == 'idp.app'"
    assert _imported_after([["--help"], ["users", "--help"]], application) == []


def test_create_app_is_still_imported_from_idp() -> None:
    """The name every caller uses (idp/wsgi.py, the tests, an operator's WSGI file) stays."""
    import idp
    from idp.app import create_app, load_checked_settings

    assert idp.create_app is create_app
    assert idp.load_checked_settings is load_checked_settings
    with pytest.raises(AttributeError):
        idp.no_such_name  # noqa: B018


def test_a_command_without_redis_configured_does_not_import_redis(tmp_path: Path) -> None:
    """Importing the redis package cost every `idp` process (a command, a server's worker) about
    a sixth of its start: only a deployment that configures Redis imports it (a fresh
    interpreter, a command that builds the whole application)."""
    loaded = last_line_after_init(
        tmp_path, "import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))"
    )
    assert loaded == "[]"


def test_a_command_that_parses_no_address_does_not_import_the_address_parser() -> None:
    """email-validator compiles its syntax tables as it is imported, about 20 ms of every
    process's start: idp.services.email_addresses imports it at the first address it parses,
    which a command that lists users or a server's start do not (a fresh interpreter, the whole
    application built)."""
    script = (
        "import sys\nfrom idp import create_app\n"
        "create_app({'database_url': 'sqlite://', 'secret_key': 'x' * 40})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'email_validator'))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert completed.stdout.splitlines()[-1] == "[]"


def test_the_console_script_runs_a_command_with_its_start_out_of_the_collector_s_sight(
    tmp_path: Path,
) -> None:
    """idp.cli ``run`` (the ``idp`` script, pyproject.toml): the collector is paused while the
    command imports idp and builds its application, then what that built is frozen and the
    collector runs again for the command's own objects (a fresh interpreter, ``idp users list``,
    which builds the whole application)."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["idp"] == "idp.cli:run"
    printed = last_line_after_init(
        tmp_path,
        "import atexit, gc, sys\n"
        "from idp.cli import run\n"
        "atexit.register(lambda: print(gc.get_freeze_count(), int(gc.isenabled())))\n"
        "gc.unfreeze(); gc.enable()\n"  # what init, in this interpreter, did before
        "sys.argv = ['idp', 'users', 'list', '--json']\n"
        "run()",
    )
    frozen, collecting = map(int, printed.split())
    assert frozen > 100_000
    assert collecting == 1
