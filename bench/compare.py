"""Two revisions of idp side by side, in interleaved rounds: what one change saves.

``.venv/bin/python -m bench.compare BEFORE AFTER [--scenarios userinfo,refresh] [--rounds 6]``
(git revisions: commits, branches, ``HEAD~1``). Each revision is checked out into a temporary
git worktree and served by its own ``idp serve --production`` (this virtualenv's packages, that
revision's code first on ``PYTHONPATH``), each on its own SQLite database, both running for the
whole comparison. Then, round after round, every scenario runs against one and then the other,
the order alternating (ABBA), so that the drift of a shared machine's load weighs on both alike;
the figure is completions per server CPU-second (bench/README.md), and the verdict the median of
the per-round ratios AFTER / BEFORE. docs/performance.md's "before and after" tables come from
here.

``--before-database postgresql`` or ``--after-database postgresql`` serves that side on a throw-away
database of the machine's PostgreSQL instead (its own, as bench.run makes them). With one revision
on both sides, ``python -m bench.compare HEAD HEAD --after-database postgresql`` measures
PostgreSQL against SQLite in interleaved rounds: the "after / before" column is the issue's
PostgreSQL / SQLite ratio, with the drift of the machine weighing on both databases alike, which
two halves of one ``python -m bench`` run, minutes apart, do not give (docs/performance.md).

The scenarios are the benchmark's own flows (bench/flows.py), from this checkout: a revision
whose pages differ too much from them for a flow to work reports that flow's errors instead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flows, load  # noqa: E402
from bench.client import Browser  # noqa: E402
from tests.conftest import throwaway_postgres_database  # noqa: E402
from tests.support.live import LiveIdp, start_live_idp  # noqa: E402

#: Completions per scenario and round at ``--scale 1``.
COUNTS = {
    "passkey_sign_in": 100,
    "password_totp_sign_in": 40,
    "refresh": 600,
    "client_credentials": 1000,
    "userinfo": 1500,
    "introspection": 1500,
}


@dataclass
class Side:
    label: str
    revision: str
    idp: LiveIdp
    fx: flows.Fixture
    #: The next seeded user (flows.users_in_turn), across rounds.
    take_user: Callable[[], tuple[str, str]]


@contextmanager
def worktree(revision: str, directory: Path) -> Iterator[Path]:
    """``revision`` checked out (detached) at ``directory``; removed afterwards."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(directory),
         revision],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield directory
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(directory)],
            check=False, capture_output=True,
        )  # fmt: skip


def scenario_runs(side: Side) -> dict[str, tuple[Callable[[int], Any], Callable[[Any], Any]]]:
    """(prepare, operation) of each scenario against ``side``."""
    fx = side.fx

    def fresh_browser(_index: int) -> Browser:
        return Browser(fx.url)

    def token_holder(_index: int) -> flows.TokenHolder:
        browser = Browser(fx.url)
        return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))

    def totp_sign_in(browser: Browser) -> None:
        flows.password_totp_sign_in(fx, browser, *side.take_user())

    return {
        "passkey_sign_in": (fresh_browser, lambda b: flows.passkey_flow(fx, b)),
        "password_totp_sign_in": (fresh_browser, totp_sign_in),
        "refresh": (token_holder, lambda h: flows.refresh(fx, h)),
        "client_credentials": (fresh_browser, lambda b: flows.client_credentials(fx, b)),
        "userinfo": (token_holder, lambda h: flows.userinfo(fx, h)),
        "introspection": (token_holder, lambda h: flows.introspect(fx, h)),
    }


def measure(side: Side, scenario: str, total: int, processes: int, threads: int) -> float:
    assert side.idp.process is not None
    prepare, operation = scenario_runs(side)[scenario]
    measured = load.run(
        f"{scenario} ({side.label})",
        prepare=prepare,
        operation=operation,
        total=total,
        processes=processes,
        threads=threads,
        pgid=side.idp.process.pid,
    )
    if measured.errors:
        print(f"  {side.label} {scenario}: {measured.errors} errors, e.g. {measured.samples[:1]}",
              file=sys.stderr)  # fmt: skip
    return measured.per_cpu_second


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--scenarios", default=",".join(COUNTS), help=f"of {', '.join(COUNTS)}")
    for label in ("before", "after"):
        parser.add_argument(
            f"--{label}-database", choices=("sqlite", "postgresql"), default="sqlite",
            help=f"the database {label.upper()} is served on (default: sqlite)",
        )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scale", type=float, default=0.25, help="multiply every count")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--threads", type=int, default=4, help="browsers per generator process")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(COUNTS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    totals = {s: max(8, int(COUNTS[s] * args.scale)) for s in scenarios}
    sides: list[Side] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="idp-compare-")))
        for label, revision, database in (
            ("before", args.before, args.before_database),
            ("after", args.after, args.after_database),
        ):
            code = stack.enter_context(worktree(revision, tmp / f"{label}-code"))
            directory = tmp / label
            directory.mkdir()
            url = None
            if database == "postgresql":
                url = stack.enter_context(throwaway_postgres_database())
            # No ``idp init`` in this process: its schema would be this checkout's, which the
            # other revision may not know (a newer migration). ``idp serve`` of the revision's
            # own code creates the database.
            idp = stack.enter_context(start_live_idp(
                directory, database_url=url, production=True, init=False,
                env={**flows.BENCH_ENV, "PYTHONPATH": str(code)},
            ))  # fmt: skip
            print(f"{label}: {revision} at {idp.url} on {url or 'SQLite'}", file=sys.stderr)
            fx = flows.setup(idp)
            users = []
            if "password_totp_sign_in" in scenarios:
                users = flows.seed_totp_users(
                    idp, totals["password_totp_sign_in"] * (args.rounds + 1)
                )
            flows.passkey_flow(fx, Browser(fx.url))  # warm the workers a little
            sides.append(Side(label, revision, idp, fx, flows.users_in_turn(users)))
        results: dict[str, list[tuple[float, float]]] = {s: [] for s in scenarios}
        for round_number in range(args.rounds):
            order = sides if round_number % 2 == 0 else sides[::-1]
            for scenario in scenarios:
                figures = {
                    side.label: measure(side, scenario, totals[scenario], args.processes,
                                        args.threads)
                    for side in order
                }  # fmt: skip
                results[scenario].append((figures["before"], figures["after"]))
                print(
                    f"  round {round_number + 1} {scenario}: before {figures['before']:.1f}, "
                    f"after {figures['after']:.1f} per server CPU-s",
                    file=sys.stderr,
                    flush=True,
                )
    print(render(f"{args.before} ({args.before_database})",
                 f"{args.after} ({args.after_database})", results))  # fmt: skip


def render(before: str, after: str, results: dict[str, list[tuple[float, float]]]) -> str:
    lines = [
        f"Per server CPU-second, interleaved rounds: before = `{before}`, after = `{after}`\n",
        "| scenario | before (median) | after (median) | after / before (median of rounds) "
        "| rounds (before -> after) |",
        "|---|---|---|---|---|",
    ]
    for scenario, rounds in results.items():
        ratios = [a / b for b, a in rounds if b > 0]
        each = "; ".join(f"{b:,.0f} -> {a:,.0f}" for b, a in rounds)
        lines.append(
            f"| {scenario} | {statistics.median(b for b, _ in rounds):,.1f} "
            f"| {statistics.median(a for _, a in rounds):,.1f} "
            f"| {statistics.median(ratios):.2f} | {each} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
