"""granian against gunicorn under idp, in interleaved rounds (the machine's other load drifts).

``.venv/bin/python -m bench.servers [--rounds 3] [--database sqlite|postgresql]``: each round
restarts ``idp serve --production`` with each server in turn on the same database and measures
the passkey sign-in, refresh grants, userinfo and hello-world per server CPU-second (same settings:
one worker per CPU, 4 threads each); prints every round and the median per server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flows, load  # noqa: E402
from bench.client import Browser  # noqa: E402
from bench.run import database_urls, hello_server  # noqa: E402
from idp.serving import SERVERS  # noqa: E402
from tests.support.live import start_live_idp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    sizes = {"passkey": 80, "refresh": 600, "userinfo": 1500, "hello": 5000}
    sizes = {k: max(2, int(v * args.scale)) for k, v in sizes.items()}
    results: dict[tuple[str, str], list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="idp-servers-") as tmp,
        database_urls([args.database]) as urls,
    ):
        [(_name, url)] = urls
        with start_live_idp(
            Path(tmp), database_url=url, production=True, env=flows.BENCH_ENV
        ) as idp:
            fx = flows.setup(idp)
            for round_number in range(1, args.rounds + 1):
                for server in SERVERS:
                    idp.stop()
                    idp.server = server
                    idp.start()
                    assert idp.process is not None
                    pgid = idp.process.pid
                    flows.passkey_flow(fx, Browser(fx.url))

                    def holder(_i: int) -> flows.TokenHolder:
                        browser = Browser(fx.url)
                        return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))

                    runs = {
                        "passkey": (
                            lambda _i: Browser(fx.url),
                            lambda b: flows.passkey_flow(fx, b),
                        ),
                        "refresh": (holder, lambda h: flows.refresh(fx, h)),
                        "userinfo": (holder, lambda h: flows.userinfo(fx, h)),
                    }
                    for name, (prepare, operation) in runs.items():
                        m = load.run(
                            name,
                            prepare=prepare,
                            operation=operation,
                            total=sizes[name],
                            processes=2,
                            threads=4,
                            pgid=pgid,
                        )
                        results.setdefault((name, server), []).append(m.per_cpu_second)
                        print(
                            f"round {round_number} {server:8} {name:8} "
                            f"{m.per_cpu_second:8.1f} per server CPU-s ({m.errors} errors)",
                            flush=True,
                        )
                    with hello_server(server, Path(tmp)) as (hello_url, hello_pgid):
                        m = load.run(
                            "hello",
                            prepare=lambda _i, u=hello_url: Browser(u),
                            operation=_hello,
                            total=sizes["hello"],
                            processes=2,
                            threads=4,
                            pgid=hello_pgid,
                        )
                    results.setdefault(("hello", server), []).append(m.per_cpu_second)
                    print(
                        f"round {round_number} {server:8} hello    "
                        f"{m.per_cpu_second:8.1f} per server CPU-s",
                        flush=True,
                    )
    print(f"\nmedian per server CPU-second over {args.rounds} rounds ({args.database}):")
    print("| scenario | " + " | ".join(SERVERS) + " |")
    print("|---|" + "---|" * len(SERVERS))
    for name in ("passkey", "refresh", "userinfo", "hello"):
        cells = [f"{statistics.median(results[(name, s)]):,.1f}" for s in SERVERS]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _hello(browser: Browser) -> None:
    flows.expect(browser.get("/hello").status == 200, "hello")


if __name__ == "__main__":
    main()
