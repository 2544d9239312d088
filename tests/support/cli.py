"""The ``idp`` command line run in-process (Click's CliRunner) against a SQLite deployment of its
own, as an operator would: ``idp init`` first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from idp.cli import main


def initialised_cli(directory: Path, **settings: str) -> CliRunner:
    """``idp init`` on ``directory/idp.db``; a runner whose ``env`` is that deployment's, with
    ``settings`` (more ``IDP_*`` variables) over it."""
    runner = CliRunner(env=deployment_env(directory) | settings)
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0, result.output
    return runner


def deployment_env(directory: Path) -> dict[str, str]:
    """The ``IDP_*`` variables of a SQLite deployment in ``directory`` (``directory/idp.db``)."""
    return {
        "IDP_DATABASE_URL": f"sqlite:///{directory / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(directory),
        "IDP_SECRET_KEY": "x" * 40,
    }


def last_line_after_init(directory: Path, then: str) -> str:
    """In a fresh interpreter (the test's own has imported everything already): ``idp init`` on
    a deployment in ``directory``, then the Python ``then``; the last line it printed."""
    script = f"from idp.cli import main\nmain(['init'], standalone_mode=False)\n{then}\n"
    env = {"PATH": "/usr/bin:/bin", **deployment_env(directory)}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.splitlines()[-1]
