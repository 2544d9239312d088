"""`idp serve` on a port another server listens on: granian's SO_REUSEPORT would let it start and
share that port's connections with the other one, so idp refuses to start instead."""

from __future__ import annotations

import subprocess
from pathlib import Path

import requests

from tests.support.live import IDP_BIN, start_live_idp


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
