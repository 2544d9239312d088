"""The ``idp`` command line run in-process (Click's CliRunner) against a SQLite deployment of its
own, as an operator would: ``idp init`` first."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from idp.cli import main


def initialised_cli(directory: Path, **settings: str) -> CliRunner:
    """``idp init`` on ``directory/idp.db``; a runner whose ``env`` is that deployment's, with
    ``settings`` (more ``IDP_*`` variables) over it."""
    env = {
        "IDP_DATABASE_URL": f"sqlite:///{directory / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(directory),
        "IDP_SECRET_KEY": "x" * 40,
        **settings,
    }
    runner = CliRunner(env=env)
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    return runner
