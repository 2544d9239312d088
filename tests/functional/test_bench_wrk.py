"""``python -m bench --peer``'s wrk driver (bench/wrk.py): how it finds wrk, its window, the busy
warning, and the refresh scenario's rotating chains through the peer's bench.lua against a server
that writes its token responses as idp does (a space after each colon). Timings are not checked:
the chains test counts responses, and only that they go on past one round of the pool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from bench import peer, wrk

ROOT = Path(__file__).resolve().parents[2]
BENCH_LUA = ROOT.parent / "shared" / "peer" / "bench.lua"


def test_without_wrk_and_without_root_the_message_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problem = wrk.ensure_wrk()
    assert problem is not None
    assert "`apt-get install wrk`" in problem


def test_a_failed_install_says_so_and_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "wrk" else "/usr/bin/x")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    ran: list[list[str]] = []

    def refuse(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 100, "", "E: no lists")

    monkeypatch.setattr(subprocess, "run", refuse)
    problem = wrk.ensure_wrk()
    assert ran == [["apt-get", "update"]]
    assert problem is not None
    assert "apt-get update" in problem
    assert "E: no lists" in problem
    assert "`apt-get install wrk`" in problem


def test_the_window_scales_with_floors() -> None:
    assert wrk.window_for(1, smoke=False) == wrk.Window(warmup=3, measure=10)
    assert wrk.window_for(0.25, smoke=False) == wrk.Window(warmup=2, measure=3)
    assert wrk.window_for(2, smoke=False) == wrk.Window(warmup=6, measure=20)
    assert wrk.window_for(1, smoke=True) == wrk.Window(warmup=0.5, measure=1)


def test_the_busy_warning_tells_a_crowded_core_from_a_starved_server() -> None:
    busy = wrk.Result("busy", ok=100, window=10, cpu=9.5, core_other=0.2)
    crowded = wrk.Result("crowded", ok=100, window=10, cpu=3.4, core_other=6.5)
    starved = wrk.Result("starved", ok=100, window=10, cpu=3.0, core_other=0.1, wrk_cpu=0.5)
    warnings = peer.held_back([busy, crowded, starved])
    assert len(warnings) == 2
    assert warnings[0].startswith("crowded: the server was 34% busy")
    assert "other work took 65% of CPU 0" in warnings[0]
    assert warnings[1].startswith("starved: the server was 30% busy")
    assert "CPU 0 was idle 69% of the window" in warnings[1]


class _Chains(BaseHTTPRequestHandler):
    """A token endpoint that rotates: each refresh token is accepted once and answered with the
    next, in json.dumps's spacing (idp's)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    spent: set[str] = set()
    #: Tokens presented that this server had answered with: a chain went on through rotate.lua.
    followed: list[str] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        token = form.get("refresh_token", [""])[0]
        with self.lock:
            fresh = token.startswith("rt-") and token not in self.spent
            self.spent.add(token)
            if fresh and not token[3:].isdigit():  # not a chain's first token, "rt-<n>"
                self.followed.append(token)
        status, body = (200, {"refresh_token": token + "+"}) if fresh else (400, {"error": "x"})
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # wrk drops its connections at the end of its run: no traceback for that


@pytest.fixture
def chains_server() -> Iterator[str]:
    _Chains.spent = set()
    _Chains.followed = []
    server = _QuietServer(("127.0.0.1", 0), _Chains)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed (apt-get install wrk)")
@pytest.mark.skipif(not BENCH_LUA.is_file(), reason="no ../shared/peer/bench.lua")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="wrk is pinned to CPU 1")
def test_rotating_chains_go_on_through_responses_spaced_as_idp_writes_them(
    chains_server: str,
) -> None:
    chains = tuple(f"rt-{n}" for n in range(2 * wrk.CONNECTIONS))
    request = wrk.Request(
        "POST", "/token", '"refresh_token"', "grant_type=refresh_token&refresh_token={TOKEN}",
        (wrk.FORM,), chains,
    )  # fmt: skip
    result = wrk.run("chains", request, chains_server, os.getpgid(0), BENCH_LUA,
                     wrk.Window(warmup=0.5, measure=1.0))  # fmt: skip
    # Every token presented once (a second use would be a 400, counted bad), and chains went on
    # past their first tokens: bench.lua found a next token through bench/rotate.lua. Counted by
    # the server over the whole run, not within wrk's window, whose size depends on the machine.
    assert result.bad == 0, result.samples
    assert _Chains.followed, "no chain went past its first token"
