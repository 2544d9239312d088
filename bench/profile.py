"""Profile one benchmark scenario in the server with py-spy (``pip install py-spy``).

``.venv/bin/python -m bench.profile passkey [--database sqlite|postgresql] [--count N]`` starts
``idp serve --production``, runs the scenario once to warm up and once under
``py-spy record --subprocesses`` (every worker), and prints the functions with the largest share
of the samples, inclusive (the function and what it calls) and by leaf; the collapsed stacks stay
in ``bench-profile.txt`` for a flame graph.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flows, load  # noqa: E402
from bench.client import Browser  # noqa: E402
from bench.run import database_urls  # noqa: E402
from tests.support.live import start_live_idp  # noqa: E402

SCENARIOS = ("passkey", "password_totp", "refresh", "client_credentials", "userinfo", "introspect")


def summarise(raw: Path, top: int) -> str:
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        total += count
        if frames:
            leaf[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "leaf:"]
    lines += [f"{100 * n / total:5.1f}%  {f}" for f, n in leaf.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:line)"; keep the function and the file.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--server", default=None)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--output", type=Path, default=Path("bench-profile.txt"))
    flows.add_server_env_option(parser)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="idp-profile-") as tmp,
        database_urls([args.database]) as urls,
    ):
        [(_name, url)] = urls
        with start_live_idp(
            Path(tmp), database_url=url, production=True, server=args.server,
            env=flows.server_env(args),
        ) as idp:  # fmt: skip
            assert idp.process is not None
            fx = flows.setup(idp)
            users = flows.seed_totp_users(
                idp, 2 * args.count if args.scenario == "password_totp" else 0
            )
            take_user = flows.users_in_turn(users)

            def prepare(_index: int) -> object:
                browser = Browser(fx.url)
                if args.scenario in ("refresh", "userinfo", "introspect"):
                    return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))
                return browser

            def operation(state: object) -> None:
                if args.scenario == "passkey":
                    flows.passkey_flow(fx, state)  # type: ignore[arg-type]
                elif args.scenario == "password_totp":
                    flows.password_totp_sign_in(fx, state, *take_user())  # type: ignore[arg-type]
                elif args.scenario == "client_credentials":
                    flows.client_credentials(fx, state)  # type: ignore[arg-type]
                else:
                    getattr(flows, args.scenario)(fx, state)

            def once() -> load.Measurement:
                return load.run(
                    args.scenario,
                    prepare=prepare,
                    operation=operation,
                    total=args.count,
                    processes=1,
                    threads=4,
                    pgid=idp.process.pid,
                )  # type: ignore[union-attr]

            once()
            spy = Path(sys.executable).with_name("py-spy")
            recorder = subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--subprocesses",
                    "--pid",
                    str(idp.process.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--output",
                    str(args.output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2)
            measured = once()
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=120)
    print(
        f"{measured.completed} done, {measured.errors} errors, "
        f"{measured.per_cpu_second:.1f} per server CPU-s (under the profiler)"
    )
    print(summarise(args.output, args.top))


if __name__ == "__main__":
    main()
