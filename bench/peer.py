"""``python -m bench --peer``: idp beside a certified peer, per server CPU-second, on one core each.

The peer is panva's oidc-provider (Node), kept in ``../shared/peer`` beside the repository: its
README.md, ``op.mjs`` (in-memory store, dev login and consent forms, the client ``bench-client``)
and its locked ``package.json``. This module copies ``op.mjs`` and the two package files into
``.peer/`` beside it (ignored by git) and runs ``npm ci`` there once, again only when the lock
file changes; nothing is written into ``../shared``.

Both servers, and the Flask hello-world that gives the framework's ceiling, run under
``taskset -c 0``; this process and the generator processes it forks run on core 1, as the peer's
own harness pins them. Under that pinning ``idp serve --production`` starts one worker (4
threads): its worker count follows the CPUs it may use (``idp.serving.production_options``).
The scenarios are the single-request ones, each measured on idp then on the peer (the order
alternates from one scenario to the next), the same browsers (bench/client.py) driving both:

- client credentials (basic auth);
- refresh grant with rotation (the peer with ``ROTATE_REFRESH=1``), a chain per browser;
- userinfo (the peer's ``/me``) and introspection (``/token/introspection``), with the access
  token of a code flow per browser: at the peer a real authorization code + PKCE flow through
  its dev forms (any login, then consent) with ``prompt=consent`` and ``offline_access``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import flows, load
from bench.client import Browser, Reply
from bench.report import KEYS
from bench.run import databases, hello_server, row_text
from idp.serving import cpu_count
from tests.support.http_flows import expect, query_of, s256
from tests.support.live import free_port, start_live_idp

SERVER_CORE, LOAD_CORE = 0, 1
PIN_SERVER = ("taskset", "-c", str(SERVER_CORE))
PEER_FILES = ("op.mjs", "package.json", "package-lock.json")
CACHE = Path(__file__).resolve().parent / ".peer"
STAMP = "package-lock.sha256"
DISCOVERY = "/.well-known/openid-configuration"
SCOPE = "openid email profile offline_access"
SCENARIOS = ("client credentials", "refresh grant (rotation)", "userinfo", "introspection")


@dataclass(frozen=True)
class Sizes:
    requests: int  # client credentials, userinfo, introspection each
    refresh: int
    hello: int
    warm: int  # unmeasured requests per scenario and server first (JIT, caches, first queries)


#: Larger than bench/run.py's counts: the peer serves a request in about a tenth of the CPU,
#: and server CPU is read in clock ticks (10 ms), so a short run would round its figure.
FULL = Sizes(requests=20000, refresh=6000, hello=20000, warm=800)
SMOKE = Sizes(requests=40, refresh=20, hello=300, warm=8)


# -- the peer -------------------------------------------------------------------------------------
def install(peer_dir: Path, cache: Path = CACHE) -> Path:
    """The peer's files in ``cache``, its packages installed there by ``npm ci`` unless the same
    lock file already was."""
    cache.mkdir(exist_ok=True)
    for name in PEER_FILES:
        source, copy = peer_dir / name, cache / name
        if not copy.exists() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)
    digest = hashlib.sha256((cache / "package-lock.json").read_bytes()).hexdigest()
    stamp = cache / STAMP
    installed = (cache / "node_modules" / "oidc-provider" / "package.json").exists()
    if installed and stamp.exists() and stamp.read_text().strip() == digest:
        return cache
    print(f"npm ci in {cache} ...", file=sys.stderr, flush=True)
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=cache, check=True, stdout=sys.stderr
    )
    stamp.write_text(digest + "\n")
    return cache


@dataclass(frozen=True)
class Peer:
    url: str
    pid: int
    client_id: str
    client_secret: str
    redirect_uri: str
    endpoints: dict[str, str]

    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


def peer_client(op_source: str) -> tuple[str, str, str]:
    """The bench client of ``op.mjs``: its id, secret and redirect URI."""
    found = [
        re.search(pattern, op_source)
        for pattern in (
            r"client_id:\s*'([^']+)'",
            r"client_secret:\s*'([^']+)'",
            r"redirect_uris:\s*\[\s*'([^']+)'",
        )
    ]
    if not all(found):
        raise RuntimeError("op.mjs: no client_id, client_secret or redirect_uris found")
    client_id, secret, redirect = (match.group(1) for match in found if match)
    return client_id, secret, redirect


@contextmanager
def peer_server(cache: Path, log: Path) -> Iterator[Peer]:
    """``taskset -c 0 node op.mjs`` with refresh-token rotation, its own process group."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "NODE_ENV": "production", "ROTATE_REFRESH": "1"}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*PIN_SERVER, "node", "op.mjs"],
            cwd=cache,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        discovery = _wait_for(url, DISCOVERY, process).json()
        endpoints = {
            key: urlsplit(discovery[f"{key}_endpoint"]).path
            for key in ("authorization", "token", "userinfo", "introspection")
        }
        client_id, secret, redirect = peer_client((cache / "op.mjs").read_text())
        yield Peer(url, process.pid, client_id, secret, redirect, endpoints)
    finally:
        _stop(process)


def _wait_for(url: str, path: str, process: subprocess.Popen[bytes]) -> Reply:
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = Browser(url, timeout=2).get(path)
            if reply.status == 200:
                return reply
        except OSError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{url}{path} did not answer (exit status {process.poll()})")
        time.sleep(0.2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the group start_new_session made for it alone
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


# -- the peer's flows -----------------------------------------------------------------------------
FORM_ACTION = re.compile(r'<form\b[^>]*\baction="([^"]+)"', re.IGNORECASE)
INPUT = re.compile(r"<input\b([^>]*)>", re.IGNORECASE)
ATTRIBUTE = re.compile(r'([\w-]+)\s*=\s*"([^"]*)"')


def _target(location: str) -> str:
    """A redirect's path and query: the peer writes its issuer (localhost) or the Host asked."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _form_fields(page: str, login: str) -> dict[str, str]:
    """The dev forms' fields: hidden ones as served, any login and password."""
    fields = {}
    for tag in INPUT.findall(page):
        attributes = dict(ATTRIBUTE.findall(tag))
        name, kind = attributes.get("name"), attributes.get("type", "text").lower()
        if not name or kind in ("submit", "button"):
            continue
        if kind == "password":
            fields[name] = "any-password"
        elif name == "login":
            fields[name] = login
        else:
            fields[name] = html.unescape(attributes.get("value", ""))
    return fields


def code_flow(peer: Peer, browser: Browser, login: str) -> dict[str, Any]:
    """Authorization code + PKCE (S256) at the peer, fresh cookies: its login form, its consent
    form, the code, then the tokens (client_secret_basic)."""
    browser.forget_cookies()
    verifier, state, nonce = (secrets.token_urlsafe(n) for n in (48, 12, 12))
    params = {
        "client_id": peer.client_id,
        "response_type": "code",
        "scope": SCOPE,
        "redirect_uri": peer.redirect_uri,
        "state": state,
        "nonce": nonce,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    reply = browser.get(peer.endpoints["authorization"], params=params)
    pages = []
    for _ in range(12):
        if reply.status in (302, 303):
            if reply.location.startswith(peer.redirect_uri):
                break
            reply = browser.get(_target(reply.location))
            continue
        action = FORM_ACTION.search(reply.text)
        expect(reply.status == 200 and action is not None, f"peer page: {reply.status}")
        assert action is not None
        fields = _form_fields(reply.text, login)
        pages.append(fields.get("prompt", "?"))
        reply = browser.post(_target(html.unescape(action.group(1))), form=fields)
    expect(pages == ["login", "consent"], f"peer interaction pages: {pages}")
    callback = query_of(reply.location)
    expect(callback.get("state") == state and "code" in callback, f"peer callback: {callback}")
    data = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "redirect_uri": peer.redirect_uri,
        "code_verifier": verifier,
    }
    token = browser.post(peer.endpoints["token"], form=data, basic=peer.basic())
    tokens: dict[str, Any] = token.json() if token.status == 200 else {}
    expect("refresh_token" in tokens and "id_token" in tokens, f"peer token: {token.text[:200]}")
    return tokens


def peer_client_credentials(peer: Peer, browser: Browser) -> None:
    reply = browser.post(
        peer.endpoints["token"], form={"grant_type": "client_credentials"}, basic=peer.basic()
    )
    expect(reply.status == 200 and "access_token" in reply.json(), f"peer cc: {reply.text[:200]}")


def peer_refresh(peer: Peer, holder: flows.TokenHolder) -> None:
    data = {"grant_type": "refresh_token", "refresh_token": holder.tokens["refresh_token"]}
    reply = holder.browser.post(peer.endpoints["token"], form=data, basic=peer.basic())
    expect(reply.status == 200, f"peer refresh: {reply.status} {reply.text[:200]}")
    rotated = reply.json()
    expect(rotated["refresh_token"] != holder.tokens["refresh_token"], "peer did not rotate")
    holder.tokens = rotated


def peer_userinfo(peer: Peer, holder: flows.TokenHolder) -> None:
    bearer = {"Authorization": "Bearer " + holder.tokens["access_token"]}
    reply = holder.browser.get(peer.endpoints["userinfo"], headers=bearer)
    expect(reply.status == 200 and "sub" in reply.json(), f"peer userinfo: {reply.status}")


def peer_introspect(peer: Peer, holder: flows.TokenHolder) -> None:
    form = {"token": holder.tokens["access_token"], "token_type_hint": "access_token"}
    reply = holder.browser.post(peer.endpoints["introspection"], form=form, basic=peer.basic())
    expect(
        reply.status == 200 and reply.json().get("active") is True,
        f"peer introspection: {reply.status} {reply.text[:200]}",
    )


# -- the run --------------------------------------------------------------------------------------
Scenario = tuple[load.Prepare, load.Operation]


def idp_scenarios(fx: flows.Fixture) -> dict[str, Scenario]:
    def holder(_index: int) -> flows.TokenHolder:
        browser = Browser(fx.url)
        return flows.TokenHolder(browser, flows.passkey_flow(fx, browser))

    return {
        "client credentials": (
            lambda _i: Browser(fx.url),
            lambda b: flows.client_credentials(fx, b),
        ),
        "refresh grant (rotation)": (holder, lambda h: flows.refresh(fx, h)),
        "userinfo": (holder, lambda h: flows.userinfo(fx, h)),
        "introspection": (holder, lambda h: flows.introspect(fx, h)),
    }


def peer_scenarios(peer: Peer) -> dict[str, Scenario]:
    def holder(index: int) -> flows.TokenHolder:
        browser = Browser(peer.url)
        return flows.TokenHolder(browser, code_flow(peer, browser, f"user{index}"))

    return {
        "client credentials": (
            lambda _i: Browser(peer.url),
            lambda b: peer_client_credentials(peer, b),
        ),
        "refresh grant (rotation)": (holder, lambda h: peer_refresh(peer, h)),
        "userinfo": (holder, lambda h: peer_userinfo(peer, h)),
        "introspection": (holder, lambda h: peer_introspect(peer, h)),
    }


@dataclass
class Side:
    name: str
    pgid: int
    scenarios: dict[str, Scenario]


def compare(
    sides: list[Side], sizes: Sizes, processes: int, threads: int
) -> dict[str, dict[str, load.Measurement]]:
    """Every scenario on every side, the order of the sides alternating from one scenario to the
    next so that the machine's drift weighs on both; a short unmeasured run first."""
    measured: dict[str, dict[str, load.Measurement]] = {}
    for number, scenario in enumerate(SCENARIOS):
        total = sizes.refresh if scenario == "refresh grant (rotation)" else sizes.requests
        measured[scenario] = {}
        for side in sides if number % 2 == 0 else sides[::-1]:
            prepare, operation = side.scenarios[scenario]
            for count, label in ((sizes.warm, "warm-up"), (total, "")):
                result = load.run(
                    f"{scenario}, {side.name}" + (f" ({label})" if label else ""),
                    prepare=prepare,
                    operation=operation,
                    total=count,
                    processes=processes,
                    threads=threads,
                    pgid=side.pgid,
                )
                print(f"  {row_text(result)}", file=sys.stderr, flush=True)
            measured[scenario][side.name] = result
    return measured


def _pinned(pid: int) -> None:
    affinity = os.sched_getaffinity(pid)
    if affinity != {SERVER_CORE}:
        raise RuntimeError(f"process {pid} runs on CPUs {sorted(affinity)}, not {SERVER_CORE}")


def _versions(cache: Path) -> str:
    package = json.loads((cache / "node_modules" / "oidc-provider" / "package.json").read_text())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return f"oidc-provider {package['version']}, Node {node.stdout.strip()}"


def main(args: argparse.Namespace, names: list[str], server: str) -> int:
    """``--peer``; the exit status (2: what the comparison needs is missing)."""
    missing = [tool for tool in ("node", "npm", "taskset") if shutil.which(tool) is None]
    if missing:
        print(f"--peer needs {', '.join(missing)}: not found on PATH", file=sys.stderr)
        return 2
    if cpu_count() < 2:
        print("--peer pins the servers to CPU 0 and the generator to CPU 1: 2 CPUs needed, "
              f"{cpu_count()} available", file=sys.stderr)  # fmt: skip
        return 2
    if not all((args.peer_dir / name).is_file() for name in PEER_FILES):
        print(f"--peer: {', '.join(PEER_FILES)} not all in {args.peer_dir}", file=sys.stderr)
        return 2
    cache = install(args.peer_dir)
    base = SMOKE if args.smoke else FULL
    sizes = Sizes(**{k: max(1, int(v * args.scale)) for k, v in base.__dict__.items()})
    os.sched_setaffinity(0, {LOAD_CORE})  # this process and the generators it forks
    tables: dict[str, dict[str, dict[str, load.Measurement]]] = {}
    workers: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="idp-bench-peer-") as tmp,
        peer_server(cache, Path(tmp) / "peer.log") as peer,
        databases(names) as each,
    ):
        _pinned(peer.pid)
        print(f"peer: {_versions(cache)} at {peer.url}", file=sys.stderr, flush=True)
        for database, url in each:
            directory = Path(tmp) / database
            directory.mkdir()
            with start_live_idp(
                directory, database_url=url, production=True, server=server,
                env=flows.BENCH_ENV, launcher=PIN_SERVER,
            ) as idp:  # fmt: skip
                assert idp.process is not None
                _pinned(idp.process.pid)
                fx = flows.setup(idp)
                workers[database] = len(load.resident_memory(idp.process.pid)["workers"])
                print(f"{database}, {server}, pinned:", file=sys.stderr, flush=True)
                sides = [
                    Side("idp", idp.process.pid, idp_scenarios(fx)),
                    Side("peer", peer.pid, peer_scenarios(peer)),
                ]
                tables[database] = compare(sides, sizes, args.processes, args.threads)
        with hello_server(server, Path(tmp), PIN_SERVER) as (hello_url, hello_pid):
            _pinned(hello_pid)
            hello = load.run(
                "hello-world (Flask)",
                prepare=lambda _i: Browser(hello_url),
                operation=lambda b: flows.expect(b.get("/hello").status == 200, "hello"),
                total=sizes.hello,
                processes=args.processes,
                threads=args.threads,
                pgid=hello_pid,
            )
            print(f"  {row_text(hello)}", file=sys.stderr, flush=True)
        versions = _versions(cache)
    counts = ", ".join(f"{n} on {database}" for database, n in workers.items())
    setting = (
        f"Pinned: idp serve --production ({server}, workers: {counts}, 4 threads each), the "
        f"peer ({versions}, `node op.mjs`, ROTATE_REFRESH=1) and the "
        f"Flask hello-world ({server}, the same settings as idp) each under `taskset -c "
        f"{SERVER_CORE}`; the load generator ({args.processes} processes x {args.threads} "
        f"browsers, bench/client.py) on CPU {LOAD_CORE}."
    )
    text = render(tables, hello, setting)
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(summary(tables, hello, setting), indent=2) + "\n")
    runs = [m for table in tables.values() for row in table.values() for m in row.values()]
    return 1 if any(m.errors for m in [*runs, hello]) else 0


def _ratio(value: float, base: float) -> float:
    if not base or math.isnan(base) or math.isnan(value):
        return float("nan")
    return value / base


def render(
    tables: dict[str, dict[str, dict[str, load.Measurement]]], hello: load.Measurement, setting: str
) -> str:
    ceiling = hello.per_cpu_second
    lines = [f"# idp against the peer, per server CPU-second on one core\n\n{setting}\n"]
    for database, table in tables.items():
        lines += [
            f"## idp ({database}) and the peer\n",
            "| scenario | idp per server CPU-s | peer per server CPU-s | idp / peer "
            "| hello-world ceiling | idp / hello |",
            "|---|---|---|---|---|---|",
        ]
        for scenario, row in table.items():
            idp, peer = row["idp"].per_cpu_second, row["peer"].per_cpu_second
            lines.append(
                f"| {scenario} | {idp:,.1f} | {peer:,.1f} | {_ratio(idp, peer):.3f} "
                f"| {ceiling:,.0f} | {_ratio(idp, ceiling):.3f} |"
            )
        lines += [
            # The server's share of its core: below 1, the generator (or the machine's other
            # work) held it back, and its CPU per request includes more idle wake-ups.
            "\n| run | done | errors | server CPU-s | server busy | wall /s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m in [*(m for row in table.values() for m in row.values()), hello]:
            lines.append(
                f"| {m.name} | {m.completed} | {m.errors} | {m.cpu:.2f} "
                f"| {_ratio(m.cpu, m.wall):.0%} | {m.rate:,.1f} "
                f"| {m.percentile(50) * 1000:.1f} | {m.percentile(99) * 1000:.1f} |"
            )
            lines += [f"\n  {m.name} error: {sample}" for sample in m.samples]
        lines.append("")
    return "\n".join(lines)


def summary(
    tables: dict[str, dict[str, dict[str, load.Measurement]]], hello: load.Measurement, setting: str
) -> dict[str, Any]:
    ceiling = hello.per_cpu_second
    out: dict[str, Any] = {"hello_world": _number(ceiling), "setting": setting}
    for database, table in tables.items():
        out[database] = {
            KEYS[scenario]: {
                "idp": _number(row["idp"].per_cpu_second),
                "peer": _number(row["peer"].per_cpu_second),
                "idp_to_peer": _number(
                    _ratio(row["idp"].per_cpu_second, row["peer"].per_cpu_second)
                ),
            }
            for scenario, row in table.items()
        }
    return out


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)  # JSON has no NaN
