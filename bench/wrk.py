"""wrk as ``python -m bench --peer``'s load generator, measured the way the peer's harness does.

The peer's harness (``../shared/peer``: README.md, load.py) drives each server with
``taskset -c 1 wrk -t1 -c32 -s bench.lua URL`` and counts what ``bench.lua`` counts: responses
that complete inside a window opened after a warm-up, 200 with an expected substring in the body.
It divides them by the server's CPU seconds over that same window. This module does the same,
with ``bench.lua`` referenced by its path (never copied): the server's CPU is bench/load.py's
reading of its process group from ``/proc``, and wrk's own CPU and the other work on the server's
core are read too, so that a run the machine held back shows as such.

The Python generator (bench/load.py) cannot keep a Node server busy from one core, and an idle
event loop spends more CPU per request: wrk, in C, can (bench/README.md, "Beside the peer").
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import load

SERVER_CORE, LOAD_CORE = 0, 1
#: The peer's harness keeps 32 requests in flight (its wrk's ``-c32``).
CONNECTIONS = 32
#: A server below this share of its core during the window was held back (by wrk, or by other
#: work on the machine): its CPU per request then includes idle wake-ups.
BUSY_FLOOR = 0.9
ROTATE_LUA = Path(__file__).resolve().parent / "rotate.lua"
FORM = "Content-Type: application/x-www-form-urlencoded"
INSTALL = "apt-get install wrk"


def ensure_wrk() -> str | None:
    """None when wrk is on PATH, installed first with apt-get when missing and this is root (as
    scripts/test.sh installs chromium); otherwise why it is not there."""
    if shutil.which("wrk"):
        return None
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"wrk not found: {INSTALL} ...", file=sys.stderr, flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # apt-get must never prompt
        lock = ("-o", "DPkg::Lock::Timeout=120")
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", *lock, "wrk"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                return (
                    f"--peer needs wrk, and `{' '.join(command)}` failed "
                    f"(exit status {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}\n"
                    f"Install it with `{INSTALL}`."
                )
        if shutil.which("wrk"):
            return None
    return f"--peer needs wrk, its load generator: not found on PATH. Install it with `{INSTALL}`."


def basic(client_id: str, secret: str) -> str:
    """The Authorization header line bench/client.py sends for HTTP basic auth."""
    return "Authorization: Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass(frozen=True)
class Request:
    """What bench.lua sends (its BENCH_* variables) and what it counts as OK: 200 with ``expect``
    in the body. With ``chains``, bench.lua's rotating mode: ``body`` has ``{TOKEN}``, each chain
    starts from one refresh token and goes on with the one each response returns."""

    method: str
    path: str
    expect: str
    body: str = ""
    headers: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    warmup: float  # seconds of load before the window opens (not counted)
    measure: float  # seconds counted


def window_for(scale: float, smoke: bool) -> Window:
    """3 s of warm-up then 10 s counted at ``--scale 1``, scaled, with floors of 2 s and 3 s."""
    if smoke:
        return Window(warmup=0.5, measure=1.0)
    return Window(warmup=max(2.0, 3.0 * scale), measure=max(3.0, 10.0 * scale))


@dataclass
class Result:
    name: str
    ok: int = 0
    bad: int = 0
    socket_errors: int = 0
    window: float = 0.0
    cpu: float = 0.0  # the server's process group, over the window
    wrk_cpu: float = 0.0
    core_other: float = 0.0  # other work on the server's core: its busy time less the server's
    samples: list[str] = field(default_factory=list)

    @property
    def per_cpu_second(self) -> float:
        return self.ok / self.cpu if self.cpu > 0 else float("nan")

    @property
    def busy(self) -> float:
        return self.cpu / self.window if self.window else float("nan")

    @property
    def rate(self) -> float:
        return self.ok / self.window if self.window else 0.0

    def text(self) -> str:
        return (
            f"{self.name}: {self.ok} OK, {self.bad} bad, {self.socket_errors} socket errors in "
            f"{self.window:.1f} s; {self.cpu:.2f} server CPU-s ({self.busy:.0%} busy), "
            f"{self.per_cpu_second:,.1f} per server CPU-s, {self.rate:,.1f}/s wall; wrk "
            f"{self.wrk_cpu / self.window:.0%} of CPU {LOAD_CORE}, other work "
            f"{self.core_other / self.window:.0%} of CPU {SERVER_CORE}"
        )


def _process_cpu(pid: int) -> float:
    fields = load._stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / load.CLK_TCK if fields else 0.0


def _core_busy(core: int) -> float:
    """Seconds core ``core`` spent on anything (user, nice, system, irq, softirq), /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq = map(int, line.split()[1:8])
            return (user + nice + system + irq + softirq) / load.CLK_TCK
    return float("nan")


def _snapshot(pgid: int, wrk_pid: int) -> tuple[float, float, float]:
    return load.group_cpu_seconds(pgid), _process_cpu(wrk_pid), _core_busy(SERVER_CORE)


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def run(name: str, request: Request, url: str, pgid: int, lua: Path, window: Window) -> Result:
    """wrk on CPU ``LOAD_CORE`` against ``url`` for the warm-up and the window; the server's CPU
    (process group ``pgid``) read at the window's edges, on the clock bench.lua times with."""
    with tempfile.TemporaryDirectory(prefix="idp-bench-wrk-") as tmp:
        env = {
            **os.environ,
            "BENCH_METHOD": request.method,
            "BENCH_PATH": request.path,
            "BENCH_BODY": request.body,
            "BENCH_HEADERS": "\n".join(request.headers),
            "BENCH_EXPECT": request.expect,
            "BENCH_THREADS": "1",
            "BENCH_MODE": "static",
        }
        script = lua
        if request.chains:
            pool = Path(tmp) / "refresh-tokens.txt"
            pool.write_text("\n".join(request.chains) + "\n")
            env.update(BENCH_MODE="rotate", BENCH_POOL_FILE=str(pool), BENCH_LUA=str(lua))
            script = ROTATE_LUA
        start = time.time() + 0.3  # wrk's start-up and connections before the warm-up
        opens, closes = start + window.warmup, start + window.warmup + window.measure
        env.update(WIN_START=repr(opens), WIN_END=repr(closes))
        duration = math.ceil(window.warmup + window.measure + 1.5)
        command = [
            "taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{CONNECTIONS}",
            f"-d{duration}s", "--timeout", "5s", "-s", str(script), url,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            _sleep_until(opens)
            before = _snapshot(pgid, process.pid)
            _sleep_until(closes)
            after = _snapshot(pgid, process.pid)
            out, err = process.communicate(timeout=duration + 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    line = next((x for x in out.splitlines() if x.startswith("WRKRESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no WRKRESULT (exit status {process.returncode}):\n"
                           f"{out[-2000:]}\n{err[-2000:]}")  # fmt: skip
    counted = json.loads(line.removeprefix("WRKRESULT "))
    cpu, wrk_cpu, core = (b - a for a, b in zip(before, after, strict=True))
    return Result(
        name,
        ok=counted["ok"],
        bad=counted["bad"],
        socket_errors=counted["wrk_socket_errors"],
        window=window.measure,
        cpu=cpu,
        wrk_cpu=wrk_cpu,
        core_other=max(0.0, core - cpu),
        samples=[x for x in err.splitlines() if x.strip()][:3],
    )
