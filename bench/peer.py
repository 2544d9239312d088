"""``python -m bench --peer``: idp beside a certified peer, per server CPU-second, on one core each.

The peer is panva's oidc-provider (Node), kept in ``../shared/peer`` beside the repository: its
README.md, ``op.mjs`` (in-memory store, dev login and consent forms, the client ``bench-client``)
and its locked ``package.json``. This module copies ``op.mjs`` and the two package files into
``.peer/`` beside it (ignored by git) and runs ``npm ci`` there once, again only when the lock
file changes; nothing is written into ``../shared``.

Both servers, and the Flask hello-world that gives the framework's ceiling, run under
``taskset -c 0``; the load runs on core 1, as the peer's own harness pins it: ``wrk -t1 -c32``
with the peer's ``bench.lua`` (bench/wrk.py), which counts only the responses that complete inside
a window opened after a warm-up, 200 with the expected body, divided by the server's CPU seconds
over that window. Under that pinning ``idp serve --production`` starts one worker (4 threads): its
worker count follows the CPUs it may use (``idp.serving.production_options``). The scenarios are
the single-request ones, each measured on idp then on the peer (the order alternates from one
scenario to the next), their tokens minted by real flows just before (this process, on core 1):

- client credentials (basic auth);
- refresh grant with rotation (the peer with ``ROTATE_REFRESH=1``): bench.lua's rotating chains,
  each started from the refresh token of one code flow;
- userinfo (the peer's ``/me``) and introspection (``/token/introspection``), with the access
  token of one code flow: at the peer a real authorization code + PKCE flow through its dev forms
  (any login, then consent) with ``prompt=consent`` and ``offline_access``; at idp a passkey
  sign-in (bench/flows.py).
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench import flows, load, wrk
from bench.client import Browser, Reply
from bench.report import KEYS
from bench.run import database_urls, hello_server
from idp.serving import cpu_count
from tests.support.http_flows import expect, query_of, s256
from tests.support.live import free_port, start_live_idp

SERVER_CORE, LOAD_CORE = wrk.SERVER_CORE, wrk.LOAD_CORE
PIN_SERVER = ("taskset", "-c", str(SERVER_CORE))
PEER_FILES = ("op.mjs", "package.json", "package-lock.json")
CACHE = Path(__file__).resolve().parent / ".peer"
STAMP = "package-lock.sha256"
DISCOVERY = "/.well-known/openid-configuration"
SCOPE = "openid email profile offline_access"
SCENARIOS = ("client credentials", "refresh grant (rotation)", "userinfo", "introspection")


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


# -- the run --------------------------------------------------------------------------------------
#: Refresh-token chains per server, as many as the peer's harness keeps (its README.md): twice the
#: requests wrk keeps in flight, so that no connection waits for a chain.
CHAINS = 2 * wrk.CONNECTIONS
Mint = Callable[[int], dict[str, Any]]
Requests = dict[str, Callable[[], wrk.Request]]


def mint(flow: Mint, count: int) -> list[dict[str, Any]]:
    """``count`` token responses from ``flow(index)``, a few flows at a time (each its own
    browser); minted just before the run that spends them, as the peer's harness does: the peer's
    in-memory store evicts what a run does not touch."""
    with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
        return list(pool.map(flow, range(count)))


def requests(endpoints: dict[str, str], client: str, cc_client: str, flow: Mint) -> Requests:
    """The four scenarios as wrk requests, the same for both servers but for the paths, the
    clients and the tokens (each scenario's minted when it is about to run)."""
    token, userinfo, introspection = (endpoints[k] for k in ("token", "userinfo", "introspection"))

    def refresh() -> wrk.Request:
        chains = tuple(t["refresh_token"] for t in mint(flow, CHAINS))
        body = "grant_type=refresh_token&refresh_token={TOKEN}"
        return wrk.Request("POST", token, '"refresh_token"', body, (client, wrk.FORM), chains)

    def bearer() -> wrk.Request:
        header = "Authorization: Bearer " + mint(flow, 1)[0]["access_token"]
        return wrk.Request("GET", userinfo, '"sub"', headers=(header,))

    def introspect() -> wrk.Request:
        form = {"token": mint(flow, 1)[0]["access_token"], "token_type_hint": "access_token"}
        return wrk.Request(
            "POST", introspection, '"active":true', urlencode(form), (client, wrk.FORM)
        )

    return {
        "client credentials": lambda: wrk.Request(
            "POST", token, '"access_token"', "grant_type=client_credentials", (cc_client, wrk.FORM)
        ),
        "refresh grant (rotation)": refresh,
        "userinfo": bearer,
        "introspection": introspect,
    }


def idp_requests(fx: flows.Fixture) -> Requests:
    paths = {"token": "/token", "userinfo": "/userinfo", "introspection": "/introspect"}
    cc_client = wrk.basic(fx.cc_client_id, fx.cc_client_secret)
    return requests(
        paths, wrk.basic(*fx.basic()), cc_client, lambda _i: flows.passkey_flow(fx, Browser(fx.url))
    )


def peer_requests(peer: Peer) -> Requests:
    client = wrk.basic(*peer.basic())
    return requests(
        peer.endpoints, client, client, lambda i: code_flow(peer, Browser(peer.url), f"user{i}")
    )


@dataclass
class Side:
    name: str
    url: str
    pgid: int
    requests: Requests


def measure(
    name: str, request: wrk.Request, url: str, pgid: int, lua: Path, window: wrk.Window
) -> wrk.Result:
    result = wrk.run(name, request, url, pgid, lua, window)
    print(f"  {result.text()}", file=sys.stderr, flush=True)
    for warning in held_back([result]):
        print(f"  WARNING: {warning}", file=sys.stderr, flush=True)
    return result


def held_back(results: list[wrk.Result]) -> list[str]:
    """A line for each run whose server was below ``wrk.BUSY_FLOOR`` of its core, saying why: its
    core full of the machine's other work (the server had requests waiting but not the CPU), or
    its core idle for part of the window (the load did not keep it busy: an idle server spends
    more CPU per request, so its figure is low)."""
    lines = []
    for r in results:
        if r.busy >= wrk.BUSY_FLOOR:
            continue
        other, idle = r.core_other / r.window, max(0.0, 1 - (r.cpu + r.core_other) / r.window)
        why = (
            f"CPU {wrk.SERVER_CORE} was idle {idle:.0%} of the window: the load did not keep "
            f"the server busy (wrk: {r.wrk_cpu / r.window:.0%} of CPU {wrk.LOAD_CORE}), and a "
            f"server that waits between requests spends more CPU on each"
            if idle >= 1 - wrk.BUSY_FLOOR
            else f"the machine's other work took {other:.0%} of CPU {wrk.SERVER_CORE}: the "
            f"server had requests waiting but not the core (a quiet machine measures better)"
        )
        lines.append(f"{r.name}: the server was {r.busy:.0%} busy (< {wrk.BUSY_FLOOR:.0%}); {why}")
    return lines


def compare(sides: list[Side], lua: Path, window: wrk.Window) -> dict[str, dict[str, wrk.Result]]:
    """Every scenario on every side, the order of the sides alternating from one scenario to the
    next so that the machine's drift weighs on both."""
    measured: dict[str, dict[str, wrk.Result]] = {}
    for number, scenario in enumerate(SCENARIOS):
        measured[scenario] = {}
        for side in sides if number % 2 == 0 else sides[::-1]:
            request = side.requests[scenario]()
            name = f"{scenario}, {side.name}"
            measured[scenario][side.name] = measure(name, request, side.url, side.pgid, lua, window)
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
    lua = args.peer_dir / "bench.lua"
    if not all((args.peer_dir / name).is_file() for name in (*PEER_FILES, lua.name)):
        print(f"--peer: {', '.join(PEER_FILES)}, {lua.name} not all in {args.peer_dir}",
              file=sys.stderr)  # fmt: skip
        return 2
    problem = wrk.ensure_wrk()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    cache = install(args.peer_dir)
    window = wrk.window_for(args.scale, args.smoke)
    os.sched_setaffinity(0, {LOAD_CORE})  # this process and the flows that mint the tokens
    tables: dict[str, dict[str, dict[str, wrk.Result]]] = {}
    workers: dict[str, int] = {}
    with (
        tempfile.TemporaryDirectory(prefix="idp-bench-peer-") as tmp,
        peer_server(cache, Path(tmp) / "peer.log") as peer,
        database_urls(names) as urls,
    ):
        _pinned(peer.pid)
        print(f"peer: {_versions(cache)} at {peer.url}", file=sys.stderr, flush=True)
        for database, url in urls:
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
                    Side("idp", fx.url, idp.process.pid, idp_requests(fx)),
                    Side("peer", peer.url, peer.pid, peer_requests(peer)),
                ]
                tables[database] = compare(sides, lua, window)
        with hello_server(server, Path(tmp), PIN_SERVER) as (hello_url, hello_pid):
            _pinned(hello_pid)
            request = wrk.Request("GET", "/hello", '"hello"')
            hello = measure("hello-world (Flask)", request, hello_url, hello_pid, lua, window)
        versions = _versions(cache)
    counts = ", ".join(f"{n} on {database}" for database, n in workers.items())
    setting = (
        f"Pinned: idp serve --production ({server}, workers: {counts}, 4 threads each), the "
        f"peer ({versions}, `node op.mjs`, ROTATE_REFRESH=1) and the "
        f"Flask hello-world ({server}, the same settings as idp) each under `taskset -c "
        f"{SERVER_CORE}`; the load: `taskset -c {LOAD_CORE} wrk -t1 -c{wrk.CONNECTIONS} -s "
        f"{lua}` ({_wrk_version()}), {window.warmup:g} s of warm-up, then {window.measure:g} s "
        f"counted (what bench.lua counts: 200 with the expected body); refresh: {CHAINS} "
        f"rotating chains per server."
    )
    text = render(tables, hello, setting)
    print(text)
    if args.output:
        args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(summary(tables, hello, setting), indent=2) + "\n")
    runs = [r for table in tables.values() for row in table.values() for r in row.values()]
    return 1 if any(r.bad or not r.ok for r in [*runs, hello]) else 0


def _wrk_version() -> str:
    shown = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    words = (shown.stdout + shown.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def _ratio(value: float, base: float) -> float:
    if not base or math.isnan(base) or math.isnan(value):
        return float("nan")
    return value / base


def render(
    tables: dict[str, dict[str, dict[str, wrk.Result]]], hello: wrk.Result, setting: str
) -> str:
    ceiling = hello.per_cpu_second
    lines = [f"# idp against the peer, per server CPU-second on one core\n\n{setting}\n"]
    for database, table in tables.items():
        lines += [
            f"## idp ({database}) and the peer\n",
            "| scenario | idp per server CPU-s | peer per server CPU-s | idp / peer "
            "| hello-world ceiling | idp / hello | idp busy | peer busy |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for scenario, row in table.items():
            idp, peer = row["idp"], row["peer"]
            lines.append(
                f"| {scenario} | {idp.per_cpu_second:,.1f} | {peer.per_cpu_second:,.1f} "
                f"| {_ratio(idp.per_cpu_second, peer.per_cpu_second):.3f} | {ceiling:,.0f} "
                f"| {_ratio(idp.per_cpu_second, ceiling):.3f} | {idp.busy:.0%} | {peer.busy:.0%} |"
            )
        runs = [*(r for row in table.values() for r in row.values()), hello]
        lines += [
            # The server's share of its core over the window: below BUSY_FLOOR, something held it
            # back (wrk, or the machine's other work on the same core: the next column).
            f"\n| run | OK | bad | socket errors | server CPU-s | server busy "
            f"| other work, CPU {SERVER_CORE} | wrk, CPU {LOAD_CORE} | wall /s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in runs:
            lines.append(
                f"| {r.name} | {r.ok} | {r.bad} | {r.socket_errors} | {r.cpu:.2f} | {r.busy:.0%} "
                f"| {r.core_other / r.window:.0%} | {r.wrk_cpu / r.window:.0%} | {r.rate:,.1f} |"
            )
            lines += [f"\n  {r.name} bad response: {sample}" for sample in r.samples]
        lines += [f"\nWARNING: {warning}" for warning in held_back(runs)]
        lines.append("")
    return "\n".join(lines)


def summary(
    tables: dict[str, dict[str, dict[str, wrk.Result]]], hello: wrk.Result, setting: str
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
                "idp_busy": _number(row["idp"].busy),
                "peer_busy": _number(row["peer"].busy),
            }
            for scenario, row in table.items()
        }
    return out


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)  # JSON has no NaN
