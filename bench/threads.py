"""Server CPU per request, thread by thread: where the server's CPU goes beyond the application.

``.venv/bin/python -m bench.threads SCENARIO [--count N] [--env NAME=VALUE]`` (``hello``,
``client_credentials``, ``userinfo``, ``introspect``, ``passkey``, ``password_totp``) serves the
hello-world or ``idp serve --production`` (SQLite) as the benchmark does, drives the scenario
with the benchmark's load (2 processes x 4 browsers), and prints each worker thread's CPU per
request (per whole sign-in for ``passkey`` and ``password_totp``;
``/proc/PID/task/TID/schedstat``, nanoseconds, unlike the 10 ms ticks of ``stat``) with its
voluntary and involuntary context switches per request. In granian the thread with the most
voluntary switches and little CPU is the Rust runtime (sockets, HTTP); the threads named
``argon2`` compute the password hashes (idp/services/passwords.py); the others run the
application under the GIL (docs/performance.md, "Server choice: granian";
docs/performance-rounds.md, "The twenty-sixth round").
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flows, load  # noqa: E402
from bench.client import Browser  # noqa: E402
from bench.run import hello_server  # noqa: E402
from idp.services.passwords import HASHING_THREAD_NAME  # noqa: E402
from tests.support.live import start_live_idp  # noqa: E402

SCENARIOS = (
    "hello", "client_credentials", "userinfo", "introspect", "passkey", "password_totp",
)  # fmt: skip
#: (process id, thread id, name) -> (CPU nanoseconds, voluntary, involuntary switches)
Sample = dict[tuple[str, str, str], tuple[int, int, int]]


def sample(pgid: int) -> Sample:
    """Every thread of the server's process group."""
    found: Sample = {}
    for pid in os.listdir("/proc"):
        fields = load._stat_fields(pid) if pid.isdigit() else None
        if fields is None or int(fields[2]) != pgid:  # field 5: pgrp
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            task = Path(f"/proc/{pid}/task/{tid}")
            try:
                nanoseconds = int((task / "schedstat").read_text().split()[0])
                status = dict(
                    line.split(":\t", 1) for line in (task / "status").read_text().splitlines()
                )
            except OSError:
                continue
            found[(pid, tid, status["Name"])] = (
                nanoseconds,
                int(status["voluntary_ctxt_switches"]),
                int(status["nonvoluntary_ctxt_switches"]),
            )
    return found


def report(before: Sample, after: Sample, count: int) -> str:
    lines = ["process/thread name: CPU µs, voluntary, involuntary switches per request"]
    total = 0.0
    by_name: dict[str, float] = {}
    for key in sorted(after):
        then = before.get(key, (0, 0, 0))
        cpu, voluntary, involuntary = (now - old for now, old in zip(after[key], then, strict=True))
        if cpu == 0:
            continue
        total += cpu / 1000 / count
        pid, tid, name = key
        by_name[name] = by_name.get(name, 0.0) + cpu / 1000 / count
        lines.append(
            f"  {pid}/{tid} {name:16} {cpu / 1000 / count:8.1f} µs"
            f"  {voluntary / count:5.2f}  {involuntary / count:5.2f}"
        )
    lines.append(f"  all threads {total:8.1f} µs per request")
    if HASHING_THREAD_NAME in by_name:
        hashing = by_name[HASHING_THREAD_NAME]
        lines.append(
            f"  {HASHING_THREAD_NAME} threads {hashing:8.1f} µs, the others"
            f" {total - hashing:8.1f} µs"
        )
    return "\n".join(lines)


def measure(
    name: str, pgid: int, prepare: load.Prepare, operation: load.Operation, count: int
) -> None:
    # A warm-up first: granian starts its blocking threads on demand.
    for total in (max(1, count // 10), count):
        before = sample(pgid)
        measured = load.run(
            name, prepare=prepare, operation=operation, total=total, processes=2, threads=4,
            pgid=pgid,
        )  # fmt: skip
    after = sample(pgid)
    print(f"{name}: {measured.per_cpu_second:,.0f} per server CPU-second, {measured.errors} errors")
    print(report(before, after, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--count", type=int, default=1500)
    flows.add_server_env_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="idp-threads-") as tmp:
        if args.scenario == "hello":
            with hello_server("granian", Path(tmp)) as (url, pgid):
                measure("hello", pgid, lambda _i: Browser(url), _hello, args.count)
            return
        with start_live_idp(Path(tmp), production=True, env=flows.server_env(args)) as idp:
            assert idp.process is not None
            fx = flows.setup(idp)
            pgid = idp.process.pid
            # The scenarios whose browser starts with nothing; the others hold tokens.
            fresh: dict[str, Callable[[Browser], object]] = {
                "client_credentials": lambda b: flows.client_credentials(fx, b),
                "passkey": lambda b: flows.passkey_flow(fx, b),
            }
            if args.scenario == "password_totp":
                seeded = flows.seed_totp_users(idp, args.count + args.count // 10)
                take_user = flows.users_in_turn(seeded)
                fresh["password_totp"] = lambda b: flows.password_totp_sign_in(fx, b, *take_user())
            if args.scenario in fresh:
                operation = fresh[args.scenario]
                measure(args.scenario, pgid, lambda _i: Browser(fx.url), operation, args.count)
                return

            def holder(_index: int) -> flows.TokenHolder:
                browser = Browser(fx.url)
                return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))

            with_tokens = getattr(flows, args.scenario)
            measure(args.scenario, pgid, holder, lambda h: with_tokens(fx, h), args.count)


def _hello(browser: Browser) -> None:
    flows.expect(browser.get("/hello").status == 200, "hello")


if __name__ == "__main__":
    main()
