"""The benchmark: idp's production server on SQLite and PostgreSQL, per server CPU-second.

From the repository root: ``.venv/bin/python -m bench`` (bench/README.md; ``--smoke`` for a run of
a few seconds with tiny counts). For each database it starts ``idp serve --production`` (through
``tests.support.live``) for each WSGI server asked for, and reports per second of server CPU
(user + system time of the server's process group, from /proc):

- passkey sign-ins through the whole code + PKCE flow (RS256 ID token), p50 / p99 at saturation
  and p99 at about 70 % of the saturation rate (open loop);
- password + TOTP sign-ins beside the rate Argon2id verification alone allows on this machine,
  measured in the same run with idp's parameters;
- refresh grants with rotation, client credentials, userinfo, introspection;
- the bare framework's ceiling: a Flask hello-world under the same server settings;
- SQL statements and commits per sign-in (a restart with ``IDP_STATEMENT_COUNTS_DIR``);
- resident memory of each worker after the run.

With both databases and one server setting, both servers run at once and the scenarios take turns
between them (``interleaved``), so that the PostgreSQL / SQLite ratios carry none of the
machine's drift over the run.

Each figure is printed beside its target, a ratio to figures of the same run (bench/report.py,
which also writes ``--json FILE``). ``--peer`` measures idp beside a certified peer instead
(bench/peer.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flows, load  # noqa: E402
from bench.client import Browser  # noqa: E402
from bench.report import Report, Yardstick, render, steadiness, summary  # noqa: E402
from idp.serving import DEFAULT_SERVER, SERVERS, cpu_count  # noqa: E402
from tests.support.live import LiveIdp, free_port, start_live_idp  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    passkey: int
    password_totp: int
    refresh: int
    requests: int  # userinfo, introspection, client credentials each
    hello: int
    paced_passkey: int
    argon2: int
    counted_sign_ins: int


FULL = Sizes(
    passkey=400,
    password_totp=150,
    refresh=3000,
    requests=5000,
    hello=10000,
    paced_passkey=300,
    argon2=200,
    counted_sign_ins=5,
)
SMOKE = Sizes(
    passkey=6,
    password_totp=4,
    # Enough CPU that /proc counts it (a clock tick is 10 ms): 100 userinfo requests could cost
    # less than one tick per worker on a fast machine and show no CPU at all, so no figure.
    refresh=200,
    requests=400,
    hello=1000,
    paced_passkey=4,
    argon2=4,
    counted_sign_ins=1,
)


# -- servers --------------------------------------------------------------------------------------
@contextmanager
def database_urls(names: list[str]) -> Iterator[list[tuple[str, str | None]]]:
    """(name, URL) of every database in ``names``, all at once; PostgreSQL's is a throw-away
    database on the machine's server, dropped at the end."""
    from tests.conftest import throwaway_postgres_database

    with ExitStack() as stack:
        yield [
            (name, None if name == "sqlite" else stack.enter_context(throwaway_postgres_database()))
            for name in names
        ]


@contextmanager
def hello_server(
    server: str, directory: Path, launcher: tuple[str, ...] = ()
) -> Iterator[tuple[str, int]]:
    """bench/hello.py under the settings ``idp serve --production`` gives ``server``, run under
    ``launcher`` (``taskset -c 0`` with ``--peer``)."""
    port = free_port()
    code = (
        "import sys; from idp import serving; "
        "serving.run(sys.argv[1], serving.production_options('127.0.0.1', int(sys.argv[2])), "
        "'bench.hello:app')"
    )
    with (directory / f"hello-{server}.log").open("ab") as log:
        process = subprocess.Popen(
            [*launcher, sys.executable, "-c", code, server, str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if Browser(url, timeout=2).get("/hello").status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


# -- Argon2id alone -------------------------------------------------------------------------------
def _argon2_worker(count: int, results: Any) -> None:
    from idp.services.passwords import PasswordService
    from idp.settings import Settings

    defaults = Settings()
    service = PasswordService(
        memory_kib=defaults.argon2_memory_kib,
        time_cost=defaults.argon2_time_cost,
        parallelism=defaults.argon2_parallelism,
    )
    stored = service.hash(flows.PASSWORD)
    started = time.process_time()
    for _ in range(count):
        assert service.verify(stored, flows.PASSWORD).ok
    results.put(time.process_time() - started)


def argon2_per_cpu_second(count: int, processes: int) -> float:
    """Argon2id verifications per CPU-second with idp's default parameters, in ``processes``
    processes at once (as the server's workers would be)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    per_process = max(1, count // processes)
    children = [
        context.Process(target=_argon2_worker, args=(per_process, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    cpu = sum(results.get(timeout=600) for _ in children)
    for child in children:
        child.join()
    return per_process * processes / cpu


# -- one server on one database -------------------------------------------------------------------
def measure_idp(
    idp: LiveIdp, fx: flows.Fixture, sizes: Sizes, processes: int, threads: int
) -> Iterator[load.Measurement]:
    """The scenarios on one server, one at a time: each is measured when the next measurement is
    asked for, so that ``interleaved`` can take turns between databases."""
    assert idp.process is not None
    pgid = idp.process.pid
    url = fx.url

    def fresh_browser(_index: int) -> Browser:
        return Browser(url)

    def token_holder(_index: int) -> flows.TokenHolder:
        browser = Browser(url)
        return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))

    # Every browser of the generator runs the operation twice before a scenario is measured,
    # uncounted: each worker process and server thread has then compiled the scenario's
    # statements, rendered its templates, loaded its keys and opened its connections, so the
    # figures are the steady state, as the peer's wrk window opens after a warm-up
    # (bench/README.md).
    warm_up = 2 * processes * threads

    def scenario(
        name: str,
        total: int,
        prepare: load.Prepare,
        operation: load.Operation,
        rate: float | None = None,
    ) -> load.Measurement:
        if rate is None:
            load.run(
                f"{name} (warm-up)",
                prepare=prepare,
                operation=operation,
                total=min(warm_up, total),
                processes=processes,
                threads=threads,
                pgid=pgid,
            )
        measured = load.run(
            name,
            prepare=prepare,
            operation=operation,
            total=total,
            processes=processes,
            threads=threads,
            pgid=pgid,
            rate=rate,
        )
        print(f"  {row_text(measured)}", file=sys.stderr, flush=True)
        return measured

    passkey = scenario(
        "passkey sign-in (code flow)",
        sizes.passkey,
        fresh_browser,
        lambda b: flows.passkey_flow(fx, b),
    )
    yield passkey
    # ~70 % of the saturation rate measured just now, offered on a fixed schedule.
    paced_rate = max(1.0, 0.7 * passkey.rate)
    yield scenario(
        "passkey at 70 % load",
        sizes.paced_passkey,
        fresh_browser,
        lambda b: flows.passkey_flow(fx, b),
        rate=paced_rate,
    )

    # One user per sign-in, the warm-up's included.
    users = flows.seed_totp_users(idp, sizes.password_totp + min(warm_up, sizes.password_totp))
    take_user = flows.users_in_turn(users)

    def totp_sign_in(browser: Browser) -> None:
        flows.password_totp_sign_in(fx, browser, *take_user())

    yield scenario("password + TOTP sign-in", sizes.password_totp, fresh_browser, totp_sign_in)
    yield scenario(
        "refresh grant (rotation)", sizes.refresh, token_holder, lambda h: flows.refresh(fx, h)
    )
    yield scenario(
        "client credentials",
        sizes.requests,
        fresh_browser,
        lambda b: flows.client_credentials(fx, b),
    )
    yield scenario("userinfo", sizes.requests, token_holder, lambda h: flows.userinfo(fx, h))
    yield scenario("introspection", sizes.requests, token_holder, lambda h: flows.introspect(fx, h))


def interleaved(
    runs: dict[str, Iterator[load.Measurement]],
) -> dict[str, list[load.Measurement]]:
    """Each scenario on every database in turn, the order alternating from one scenario to the
    next (ABBA), all servers up: the machine's speed drifts over a run (docs/performance.md),
    and measured one database after the other, minutes apart, that drift would be in the
    PostgreSQL / SQLite ratio. Each database's scenarios keep their own order."""
    rows: dict[str, list[load.Measurement]] = {name: [] for name in runs}
    names = list(runs)
    turn = 0
    while runs:
        for name in names if turn % 2 == 0 else names[::-1]:
            if name not in runs:
                continue
            print(f"{name}:", file=sys.stderr, flush=True)
            measured = next(runs[name], None)
            if measured is None:
                del runs[name]
            else:
                rows[name].append(measured)
        turn += 1
    return rows


def compare_groups(
    idp: LiveIdp, fx: flows.Fixture, per_round: int, rounds: int, processes: int, threads: int
) -> list[tuple[float, float]]:
    """Passkey sign-ins of the same user with groups (``fx``: the restricted client, the groups
    scope, the claim maps) and without (``fx.without_groups()``), in interleaved rounds on one
    server (ABBA order), so that the machine's drifting load weighs on both alike. Returns
    (with, without) per server CPU-second for each round."""
    assert idp.process is not None
    plain = fx.without_groups()
    results: list[tuple[float, float]] = []
    for round_number in range(rounds):
        figures: dict[str, float] = {}
        order = [("with", fx), ("without", plain)]
        for label, fixture in order if round_number % 2 == 0 else order[::-1]:
            measured = load.run(
                f"passkey sign-in {label} groups",
                prepare=lambda _i: Browser(idp.url),
                operation=lambda b, f=fixture: flows.passkey_flow(f, b),
                total=per_round,
                processes=processes,
                threads=threads,
                pgid=idp.process.pid,
            )
            flows.expect(measured.errors == 0, f"{measured.name}: {measured.samples}")
            figures[label] = measured.per_cpu_second
        results.append((figures["with"], figures["without"]))
        print(
            f"  groups round {round_number + 1}: with {figures['with']:.1f}, without "
            f"{figures['without']:.1f} per server CPU-s",
            file=sys.stderr,
            flush=True,
        )
    return results


def count_statements(idp: LiveIdp, fx: flows.Fixture, sign_ins: int) -> dict[str, dict[str, float]]:
    """Restart the server with statement counting on; SQL per sign-in, by verb."""
    counted: dict[str, dict[str, float]] = {}
    users = flows.seed_totp_users(idp, sign_ins + 1)  # one more for the warm-up
    runs: dict[str, Callable[[Browser, int], Any]] = {
        "passkey sign-in (code flow)": lambda browser, _i: flows.passkey_flow(fx, browser),
        "password + TOTP sign-in": lambda browser, i: flows.password_totp_sign_in(
            fx, browser, *users[i]
        ),
    }
    with tempfile.TemporaryDirectory(prefix="idp-statements-") as directory:
        idp.stop()
        idp.env[STATEMENT_COUNTS_ENV] = directory
        idp.start()
        browser = Browser(fx.url)
        for run in runs.values():
            run(browser, sign_ins)  # warm: key cache, first connection, first of each query
        for name, run in runs.items():
            before = _sum_counts(Path(directory))
            for i in range(sign_ins):
                run(browser, i)
            after = _sum_counts(Path(directory))
            counted[name] = {verb: (after[verb] - before[verb]) / sign_ins for verb in after}
        browser.close()
        del idp.env[STATEMENT_COUNTS_ENV]
    idp.stop()
    return counted


STATEMENT_COUNTS_ENV = "IDP_STATEMENT_COUNTS_DIR"


def _sum_counts(directory: Path) -> Counter[str]:
    total: Counter[str] = Counter()
    for path in directory.glob("*.json"):
        try:
            total.update(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return total


# -- report ---------------------------------------------------------------------------------------
def row_text(m: load.Measurement) -> str:
    return (
        f"{m.name}: {m.completed} done, {m.errors} errors, {m.wall:.2f} s, {m.rate:.1f}/s wall, "
        f"{m.cpu:.2f} server CPU-s, {m.per_cpu_second:.1f} per server CPU-s, "
        f"p50 {m.percentile(50) * 1000:.1f} ms, p99 {m.percentile(99) * 1000:.1f} ms"
        + (f" (offered {m.offered_rate:.1f}/s)" if m.offered_rate else "")
    )


def machine_summary(processes: int, threads: int) -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_count()} CPUs ({model}), {memory:.0f} GiB, Python {platform.python_version()}; "
        f"idp serve --production: {cpu_count()} workers x 4 threads; load generator: "
        f"{processes} processes x {threads} browsers on the same cores."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, a few seconds")
    parser.add_argument(
        "--databases", help="comma-separated: sqlite,postgresql (the default; --peer: sqlite)"
    )
    parser.add_argument(
        "--servers", default=DEFAULT_SERVER, help=f"comma-separated, of {', '.join(SERVERS)}"
    )
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--threads", type=int, default=4, help="browsers per generator process")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the figures, their ratios and targets as JSON (bench/README.md)",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="client credentials, refresh, userinfo and introspection against idp and the "
        "certified peer side by side, each server pinned to core 0, the generator to core 1",
    )
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=ROOT.parent / "shared" / "peer",
        help="the peer's op.mjs, package.json, package-lock.json (default: ../shared/peer)",
    )
    parser.add_argument(
        "--groups",
        default="",
        metavar="GROUPS:MAPS",
        help="the bench user in GROUPS groups, the client restricted to one and with MAPS claim "
        "maps, sign-ins asking for the groups scope (e.g. 20:3)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="with --groups: interleaved rounds of sign-ins with and without groups",
    )
    parser.add_argument(
        "--only-groups",
        action="store_true",
        help="with --groups: only the interleaved comparison, none of the other scenarios",
    )
    args = parser.parse_args(argv)
    if args.only_groups and not args.groups:
        parser.error("--only-groups needs --groups")
    group_count, _, map_count = args.groups.partition(":")
    base = SMOKE if args.smoke else FULL
    sizes = Sizes(**{k: max(1, int(v * args.scale)) for k, v in base.__dict__.items()})
    servers = [s for s in args.servers.split(",") if s]
    names = [d for d in (args.databases or "").split(",") if d]
    if args.peer:
        from bench import peer

        sys.exit(peer.main(args, names or ["sqlite"], servers[0]))
    machine = machine_summary(args.processes, args.threads)
    print(machine, file=sys.stderr)
    # The two yardsticks are measured before and after idp's scenarios and pooled (completed
    # over CPU of both halves): this machine's speed drifts over a run, and a yardstick measured
    # at one end only would carry the drift into every ratio (docs/performance.md).
    argon2_before = argon2_per_cpu_second(sizes.argon2, cpu_count())
    hello_before = measure_hello(servers, sizes, args.processes, args.threads)
    print(f"Argon2id alone: {argon2_before:.1f} per CPU-second", file=sys.stderr)
    reports: list[Report] = []
    with (
        tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp,
        database_urls(names or ["sqlite", "postgresql"]) as urls,
        ExitStack() as serving,
    ):
        started: dict[str, tuple[LiveIdp, flows.Fixture]] = {}
        for database, url in urls:
            directory = Path(tmp) / database
            directory.mkdir()
            idp = serving.enter_context(start_live_idp(
                directory, database_url=url, production=True, server=servers[0],
                env=flows.BENCH_ENV,
            ))  # fmt: skip
            started[database] = (idp, flows.setup(idp, int(group_count or 0), int(map_count or 0)))
        # One server setting and more than one database: every database's server up at once, the
        # scenarios taking turns between them (``interleaved``).
        side_by_side: dict[str, list[load.Measurement]] = {}
        if len(servers) == 1 and len(started) > 1 and not args.only_groups:
            for _, fx in started.values():
                flows.passkey_flow(fx, Browser(fx.url))  # warm the workers a little
            side_by_side = interleaved({
                database: measure_idp(idp, fx, sizes, args.processes, args.threads)
                for database, (idp, fx) in started.items()
            })  # fmt: skip
        for database, (idp, fx) in started.items():
            for server in servers:
                if server != idp.server:
                    idp.stop()
                    idp.server = server
                    idp.start()
                report = Report(database, server, argon2_per_cpu_second=argon2_before)
                if database in side_by_side:
                    report.rows = side_by_side[database]
                elif not args.only_groups:
                    print(f"{database}, {server}:", file=sys.stderr, flush=True)
                    flows.passkey_flow(fx, Browser(fx.url))  # warm the workers a little
                    report.rows = list(measure_idp(idp, fx, sizes, args.processes, args.threads))
                assert idp.process is not None
                report.memory = load.resident_memory(idp.process.pid)
                if group_count:
                    report.groups_label = args.groups
                    report.group_rounds = compare_groups(
                        idp, fx, max(1, sizes.passkey // 4), args.rounds,
                        args.processes, args.threads,
                    )  # fmt: skip
                reports.append(report)
            idp.server = servers[0]
            statements = count_statements(idp, fx, sizes.counted_sign_ins)
            for report in reports:
                if report.database == database:
                    report.statements = statements
    hello_after = measure_hello(servers, sizes, args.processes, args.threads)
    argon2_after = argon2_per_cpu_second(sizes.argon2, cpu_count())
    argon2 = 2 / (1 / argon2_before + 1 / argon2_after)  # equal counts: CPU pooled
    print(f"Argon2id alone, after: {argon2_after:.1f}; pooled {argon2:.1f}", file=sys.stderr)
    for report in reports:
        report.argon2_per_cpu_second = argon2
        report.hello = pooled(hello_before[report.server], hello_after[report.server])
    # How far each yardstick moved between the run's two ends says whether the machine was quiet
    # (bench/report.py, QUIET_DRIFT): the targets' "three runs on a quiet machine".
    yardsticks = [
        Yardstick(
            "hello-world",
            hello_before[servers[0]].per_cpu_second,
            hello_after[servers[0]].per_cpu_second,
        ),
        Yardstick("Argon2id", argon2_before, argon2_after),
    ]
    text = render(reports, argon2, machine, yardsticks)
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.json:
        figures = summary(
            reports, argon2, machine=machine, scale=args.scale, smoke=args.smoke,
            **steadiness(yardsticks),
        )  # fmt: skip
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"JSON summary: {args.json}", file=sys.stderr)


def measure_hello(
    servers: list[str], sizes: Sizes, processes: int, threads: int
) -> dict[str, load.Measurement]:
    """The hello-world under each server's settings, as idp's scenarios are driven."""
    measured: dict[str, load.Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="idp-hello-") as tmp:
        for server in servers:
            with hello_server(server, Path(tmp)) as (url, pgid):
                hello = load.run(
                    "hello-world (Flask)",
                    prepare=lambda _i, u=url: Browser(u),
                    operation=_hello,
                    total=sizes.hello,
                    processes=processes,
                    threads=threads,
                    pgid=pgid,
                )
                print(f"  {server}: {row_text(hello)}", file=sys.stderr)
            measured[server] = hello
    return measured


def pooled(first: load.Measurement, second: load.Measurement) -> load.Measurement:
    """Both measurements as one: completed, errors, wall and CPU added, latencies together."""
    return load.Measurement(
        name=first.name,
        browsers=first.browsers,
        completed=first.completed + second.completed,
        errors=first.errors + second.errors,
        wall=first.wall + second.wall,
        cpu=first.cpu + second.cpu,
        latencies=first.latencies + second.latencies,
        samples=first.samples + second.samples,
    )


def _hello(browser: Browser) -> None:
    flows.expect(browser.get("/hello").status == 200, "hello")
