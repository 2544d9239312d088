"""`idp serve` on a port another server listens on: granian's SO_REUSEPORT would let it start and
share that port's connections with the other one, so idp refuses to start instead. And what a
worker does once it has built the application (idp.wsgi)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.support.live import IDP_BIN, idp_env, start_live_idp


def test_a_second_server_on_a_taken_port_refuses_to_start(tmp_path: Path) -> None:
    with start_live_idp(tmp_path, production=True) as first:
        second = subprocess.run(
            [str(IDP_BIN), "serve", "--production", "--port", str(first.port)],
            env=first.env, cwd=first.directory, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert second.returncode != 0
        assert "already in use" in second.stderr
        # Every connection still reaches the first server, which still answers.
        assert requests.get(first.url + "/healthz", timeout=10).status_code == 200


def test_a_restart_on_the_same_port_starts(tmp_path: Path) -> None:
    """A stop leaves connections in TIME_WAIT on the port; they do not count as taken."""
    with start_live_idp(tmp_path, production=True) as idp:
        requests.get(idp.url + "/healthz", timeout=10)
        idp.stop()
        idp.start()
        assert requests.get(idp.url + "/healthz", timeout=10).status_code == 200


def test_a_worker_freezes_what_its_start_up_built(tmp_path: Path) -> None:
    """The production servers' workers import ``idp.wsgi``: what it built (the modules, the
    application) is out of the collector's generations, so that a full collection walks only
    what requests made since and pauses the worker for a fraction of a millisecond, not for the
    tens of milliseconds the start-up's objects took (docs/performance.md)."""
    program = "import gc, idp.wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    env = idp_env(tmp_path, "http://localhost:5000")
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    frozen, tracked = map(int, done.stdout.split())
    assert frozen > 50_000, done.stdout
    assert tracked < frozen // 20, done.stdout
