"""What a server's worker does when it imports idp.wsgi (a fresh interpreter: this one holds
the test suite's objects)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_a_worker_freezes_its_start_up_objects_out_of_the_collector_s_full_collections(
    tmp_path: Path,
) -> None:
    """A full collection walks every object the collector tracks and holds the GIL while it
    does: with the start-up's objects frozen it walks only what the requests made since."""
    script = (
        "import gc\n"
        "from idp.cli import main\n"
        "main(['init'], standalone_mode=False)\n"
        "import idp.wsgi\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
        "IDP_INSTANCE_PATH": str(tmp_path),
        "IDP_SECRET_KEY": "x" * 40,
    }
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    frozen, tracked = map(int, completed.stdout.splitlines()[-1].split())
    assert frozen > 100_000
    assert tracked < 1_000
