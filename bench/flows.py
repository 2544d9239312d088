"""A first load measurement of idp: complete flows against a production-mode live server.

Starts idp with ``tests.support.live.start_live_idp(production=True)`` (gunicorn gthread, one
worker per CPU x 4 threads, SQLite), then drives it over loopback with threads, one
``requests.Session`` per simulated browser. Scenarios: passkey sign-in through the authorization
code flow (PKCE S256, fresh cookies per flow, RS256 ID token checked), refresh-token rotation,
userinfo, client credentials, and a hello-world Flask app under the same gunicorn settings.
Server CPU seconds come from /proc (utime+stime of every process in the server's group, plus
what the master reaped). The load generator shares the machine's cores with the server.

Run from the repository root: ``.venv/bin/python -m bench.flows`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from joserfc import jwt
from joserfc.jwk import KeySet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.authenticator import SoftAuthenticator  # noqa: E402
from tests.support.live import LiveIdp, free_port, start_live_idp  # noqa: E402

REDIRECT_URI = "http://localhost:9/callback"
SCOPE = "openid profile email offline_access"
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CLK_TCK = os.sysconf("SC_CLK_TCK")


class FlowError(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise FlowError(message)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


# -- server CPU -----------------------------------------------------------------------------------
def group_cpu_seconds(pgid: int) -> float:
    """utime+stime of every live process in the group, plus the leader's reaped children."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
        if int(fields[2]) != pgid:  # field 5: pgrp
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry) == pgid:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (exited workers)
    return ticks / CLK_TCK


# -- the load generator ---------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    concurrency: int
    completed: int = 0
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def row(self) -> str:
        rate = self.completed / self.wall if self.wall else 0.0
        per_cpu = self.completed / self.cpu if self.cpu else float("nan")
        return (
            f"| {self.name:<18} | {self.concurrency:>2} | {self.completed:>6} | {self.errors:>4} "
            f"| {self.wall:>7.2f} | {rate:>8.1f} | {self.percentile(50) * 1000:>7.1f} "
            f"| {self.percentile(99) * 1000:>7.1f} | {self.cpu:>7.2f} | {per_cpu:>8.1f} |"
        )


HEADER = (
    "| scenario           |  C |   done |  err |  wall s |    per s | p50 ms  | p99 ms  "
    "| srv CPU | per CPU-s |\n"
    "|--------------------|----|--------|------|---------|----------|---------|---------"
    "|---------|-----------|"
)


def run_load(
    name: str,
    total: int,
    concurrency: int,
    states: list[Any],
    operation: Callable[[Any], None],
    pgid: int,
) -> Result:
    """``total`` operations over ``concurrency`` threads, thread i using ``states[i]``."""
    result = Result(name, concurrency)
    tickets = itertools.count()
    lock = threading.Lock()

    def worker(state: Any) -> None:
        while next(tickets) < total:
            started = time.perf_counter()
            try:
                operation(state)
            except Exception as error:
                with lock:
                    result.errors += 1
                    if len(result.samples) < 3:
                        result.samples.append(f"{type(error).__name__}: {error}"[:300])
                continue
            elapsed = time.perf_counter() - started
            with lock:
                result.completed += 1
                result.latencies.append(elapsed)

    threads = [threading.Thread(target=worker, args=(s,)) for s in states[:concurrency]]
    cpu_before = group_cpu_seconds(pgid)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - started
    result.cpu = group_cpu_seconds(pgid) - cpu_before
    return result


# -- idp flows ------------------------------------------------------------------------------------
@dataclass
class Fixture:
    idp: LiveIdp
    client_id: str
    client_secret: str
    cc_client_id: str
    cc_client_secret: str
    authenticator: SoftAuthenticator
    jwks: KeySet
    auth_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.idp.url

    def basic(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)


def register_passkey(idp: LiveIdp, email: str, password: str) -> SoftAuthenticator:
    """Password sign-in at /login, then "Add a passkey" on the account page, all over HTTP."""
    browser = requests.Session()
    page = browser.get(idp.url + "/login")
    token = CSRF_FIELD.search(page.text)
    expect(token is not None, "no csrf_token on /login")
    assert token is not None
    form = {"csrf_token": token.group(1), "email": email, "password": password}
    signed_in = browser.post(idp.url + "/login", data=form, allow_redirects=False)
    expect(signed_in.status_code in (302, 303), f"password sign-in: {signed_in.status_code}")
    account = browser.get(idp.url + "/account")
    meta = CSRF_META.search(account.text)
    expect(meta is not None, f"no csrf meta on /account ({account.status_code})")
    assert meta is not None
    headers = {"X-CSRFToken": meta.group(1)}
    options = browser.post(idp.url + "/account/passkeys/options", json={}, headers=headers)
    expect(options.status_code == 200, f"registration options: {options.text[:200]}")
    ceremony = options.json()
    # A synced passkey (counter 0): concurrent sign-ins with one credential stay valid.
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    credential = authenticator.create(ceremony["publicKey"], origin=idp.url)
    stored = browser.post(
        idp.url + "/account/passkeys",
        json={"challenge_id": ceremony["challenge_id"], "credential": credential},
        headers=headers,
    )
    expect(stored.status_code == 201, f"passkey registration: {stored.status_code} {stored.text}")
    return authenticator


def passkey_flow(fx: Fixture) -> dict[str, Any]:
    """One browser, no cookies: authorize, sign in with the passkey, code, tokens, ID token."""
    browser = requests.Session()
    verifier, state, nonce = (secrets.token_urlsafe(n) for n in (48, 12, 12))
    params = {"response_type": "code", "client_id": fx.client_id, "redirect_uri": REDIRECT_URI,
              "scope": SCOPE, "state": state, "nonce": nonce,
              "code_challenge": s256(verifier), "code_challenge_method": "S256"}  # fmt: skip
    response = browser.get(fx.url + "/authorize", params=params, allow_redirects=False)
    location = response.headers.get("Location", "")
    expect(response.status_code == 302 and "/login" in location, f"authorize: {location}")
    login = browser.get(urljoin(fx.url, location))
    meta = CSRF_META.search(login.text)
    expect(login.status_code == 200 and meta is not None, f"login page: {login.status_code}")
    assert meta is not None
    headers = {"X-CSRFToken": meta.group(1)}
    options = browser.post(fx.url + "/login/passkey/options", json={}, headers=headers)
    expect(options.status_code == 200, f"passkey options: {options.status_code}")
    ceremony = options.json()
    with fx.auth_lock:
        credential = fx.authenticator.get(ceremony["publicKey"], origin=fx.url)
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
            "request": query_of(location).get("request", ""), "next": ""}  # fmt: skip
    verified = browser.post(fx.url + "/login/passkey/verify", json=body, headers=headers)
    expect(verified.status_code == 200, f"passkey verify: {verified.status_code} {verified.text}")
    response = browser.get(urljoin(fx.url, verified.json()["redirect"]), allow_redirects=False)
    location = response.headers.get("Location", "")
    expect(location.startswith(REDIRECT_URI), f"continue: {response.status_code} {location}")
    callback = query_of(location)
    expect(callback.get("state") == state and "code" in callback, f"callback: {callback}")
    data = {"grant_type": "authorization_code", "code": callback["code"],
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier}  # fmt: skip
    token = browser.post(fx.url + "/token", data=data, auth=fx.basic())
    expect(token.status_code == 200, f"token: {token.status_code} {token.text}")
    tokens: dict[str, Any] = token.json()
    claims = jwt.decode(tokens["id_token"], fx.jwks, algorithms=["RS256"]).claims
    jwt.JWTClaimsRegistry(exp={"essential": True}, iss={"value": fx.url}).validate(claims)
    expect(claims["nonce"] == nonce and claims["aud"] == fx.client_id, "ID token claims")
    expect("refresh_token" in tokens, "no refresh token")
    return tokens


@dataclass
class Browser:
    session: requests.Session
    tokens: dict[str, Any]


def refresh(fx: Fixture) -> Callable[[Browser], None]:
    def operation(b: Browser) -> None:
        data = {"grant_type": "refresh_token", "refresh_token": b.tokens["refresh_token"]}
        response = b.session.post(fx.url + "/token", data=data, auth=fx.basic())
        expect(response.status_code == 200, f"refresh: {response.status_code} {response.text}")
        rotated = response.json()
        expect(rotated["refresh_token"] != b.tokens["refresh_token"], "refresh token not rotated")
        b.tokens = rotated

    return operation


def userinfo(fx: Fixture) -> Callable[[Browser], None]:
    def operation(b: Browser) -> None:
        bearer = {"Authorization": "Bearer " + b.tokens["access_token"]}
        response = b.session.get(fx.url + "/userinfo", headers=bearer)
        expect(response.status_code == 200 and "sub" in response.json(), f"userinfo: {response}")

    return operation


def client_credentials(fx: Fixture) -> Callable[[Browser], None]:
    def operation(b: Browser) -> None:
        response = b.session.post(
            fx.url + "/token",
            data={"grant_type": "client_credentials"},
            auth=(fx.cc_client_id, fx.cc_client_secret),
        )
        expect(response.status_code == 200 and "access_token" in response.json(),
               f"client_credentials: {response.status_code} {response.text}")  # fmt: skip

    return operation


def setup(idp: LiveIdp) -> Fixture:
    email, password = "bench@example.com", "correct horse battery staple 42"
    idp.create_user(email, password, name="Bench User")
    client = idp.create_client(name="bench", redirect_uris=[REDIRECT_URI], first_party=True)
    cc = idp.cli("clients", "create", "--name", "bench-m2m", "--grant-type",
                 "client_credentials", "--redirect-uri", REDIRECT_URI, "--json")  # fmt: skip
    jwks_uri = idp.discovery()["jwks_uri"]
    return Fixture(
        idp=idp,
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        cc_client_id=cc["client_id"],
        cc_client_secret=cc["client_secret"],
        authenticator=register_passkey(idp, email, password),
        jwks=KeySet.import_key_set(requests.get(jwks_uri, timeout=10).json()),
    )


# -- hello world ----------------------------------------------------------------------------------
@contextmanager
def hello_server(directory: Path) -> Iterator[tuple[str, int]]:
    """bench/hello.py under the settings ``idp serve --production`` gives gunicorn."""
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    args = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", str(os.cpu_count()),
            "--worker-class", "gthread", "--threads", "4", "--keep-alive", "5",
            "--graceful-timeout", "30", "--no-control-socket", "--chdir", str(ROOT / "bench"),
            "hello:app"]  # fmt: skip
    with (directory / "hello.log").open("ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/hello", timeout=2).ok:
                    break
            except requests.RequestException:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


# -- profiling ------------------------------------------------------------------------------------
@contextmanager
def py_spy(pid: int, output: Path | None) -> Iterator[None]:
    if output is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    process = subprocess.Popen(
        [
            str(spy),
            "record",
            "--subprocesses",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--gil",
            "--rate",
            "200",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.5)  # attach
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--passkey", type=int, default=200, help="passkey flows")
    parser.add_argument("--refresh", type=int, default=2000, help="refresh-token grants")
    parser.add_argument("--userinfo", type=int, default=2000, help="userinfo requests")
    parser.add_argument("--client-credentials", type=int, default=2000)
    parser.add_argument("--hello", type=int, default=5000, help="hello-world requests")
    parser.add_argument(
        "--profile",
        choices=["passkey", "refresh", "userinfo", "client_credentials"],
        help="run this scenario once more under py-spy (not in the table)",
    )
    parser.add_argument("--profile-out", type=Path, default=Path("bench-profile.txt"))
    args = parser.parse_args()
    c = args.concurrency
    results: list[Result] = []

    with (
        tempfile.TemporaryDirectory(prefix="idp-bench-") as tmp,
        start_live_idp(Path(tmp), production=True) as idp,
    ):
        assert idp.process is not None
        pgid = idp.process.pid
        fx = setup(idp)
        passkey_flow(fx)  # warm both workers' caches a little
        browsers = [Browser(requests.Session(), passkey_flow(fx)) for _ in range(c)]
        scenarios: dict[str, tuple[int, Callable[[Any], None], list[Any]]] = {
            "passkey": (args.passkey, lambda _: passkey_flow(fx), [None] * c),
            "refresh": (args.refresh, refresh(fx), browsers),
            "userinfo": (args.userinfo, userinfo(fx), browsers),
            "client_credentials": (args.client_credentials, client_credentials(fx), browsers),
        }
        for name, (total, operation, states) in scenarios.items():
            if total:
                results.append(run_load(name, total, c, states, operation, pgid))
                print(results[-1].row(), file=sys.stderr, flush=True)
        if args.profile:
            total, operation, states = scenarios[args.profile]
            with py_spy(pgid, args.profile_out):
                run_load(args.profile, total, c, states, operation, pgid)
            print(f"py-spy raw profile: {args.profile_out}", file=sys.stderr)
        if args.hello:
            with hello_server(Path(tmp)) as (url, hello_pgid):
                sessions = [requests.Session() for _ in range(c)]

                def hello(session: requests.Session) -> None:
                    expect(session.get(url + "/hello").status_code == 200, "hello")

                results.append(run_load("hello (Flask)", args.hello, c, sessions, hello,
                                        hello_pgid))  # fmt: skip

    print(
        f"idp production mode: gunicorn gthread {os.cpu_count()} workers x 4 threads, SQLite; "
        f"load generator on the same {os.cpu_count()} cores; latency per flow/request"
    )
    print(HEADER)
    for result in results:
        print(result.row())
    for result in results:
        for sample in result.samples:
            print(f"  {result.name} error: {sample}")


if __name__ == "__main__":
    main()
