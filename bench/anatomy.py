"""Where a request's CPU goes, in-process: Python function calls, SQL statements, and self time by
package (cProfile), for the hello-world, discovery, userinfo, introspection, a refresh grant,
client credentials and a whole passkey sign-in, on SQLite through Flask's test client.

``.venv/bin/python -m bench.anatomy [--database-url URL] [--repeat N]``. Call and statement
counts do not drift with the machine's load, so they show what a change saves even on a busy
machine; the shares say what the time is spent in (docs/performance.md).

``--per-request N``: instead, N passkey sign-ins (after a warm-up of 50), no profiler, and the
thread CPU of each of its three requests per sign-in, test client included
(docs/performance-rounds.md, "The thirty-fourth round").
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import hashlib
import pstats
import secrets
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from sqlalchemy import event  # noqa: E402

from idp import create_app  # noqa: E402
from idp.database import upgrade  # noqa: E402
from idp.extensions import db  # noqa: E402
from tests.conftest import app_overrides  # noqa: E402
from tests.support.authenticator import SoftAuthenticator  # noqa: E402
from tests.support.factories import create_client, create_user  # noqa: E402
from tests.support.flow import RelyingParty, shown_pending_id  # noqa: E402
from tests.support.passkey_flow import PasskeyPages, csrf_meta, page_options  # noqa: E402

PACKAGES = (
    "sqlalchemy",
    "werkzeug",
    "flask",
    "authlib",
    "joserfc",
    "idp",
    "idp logs/metrics",
    "crypto (C)",
    "driver (C)",
)


def _package(filename: str, function: str) -> str:
    if any(part in filename for part in ("werkzeug/test.py", "flask/testing.py", "tests/support")):
        return "test client"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/idp/" in filename:
        logs = any(part in filename for part in ("observability", "json_logs", "metrics"))
        return "idp logs/metrics" if logs else "idp"
    if filename == "~":
        name = function.lower()
        if "sqlite3" in name or "psycopg" in name:
            return "driver (C)"
        if any(part in name for part in ("cryptography", "_rust", "argon2", "_hashlib", "hmac")):
            return "crypto (C)"
        return "builtins"
    return "stdlib"


def anatomy(app: Flask | None, operation: Callable[[], None], repeat: int) -> str:
    statements = [0]
    if app is not None:
        with app.app_context():
            engine = db.engine

        def count(*_args: Any) -> None:
            statements[0] += 1

        event.listen(engine, "before_cursor_execute", count)
    for _ in range(5):
        operation()
    statements[0] = 0
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(repeat):
        operation()
    profile.disable()
    if app is not None:
        event.remove(engine, "before_cursor_execute", count)
    stats = pstats.Stats(profile)
    shares: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        shares[_package(filename, function)] += row[2]
        total += row[2]
    cells = [f"{100 * shares[p] / total:.0f} %" for p in PACKAGES]
    calls = stats.total_calls / repeat  # type: ignore[attr-defined]
    return f"{calls:,.0f} | {statements[0] / repeat:.1f} | " + " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--per-request", type=int, metavar="N", help="passkey sign-ins to time")
    args = parser.parse_args()
    # The database and the instance folder go with the run (a SQLite file grows to tens of MB).
    with tempfile.TemporaryDirectory(prefix="idp-anatomy-") as name:
        run(args, Path(name))


def run(args: argparse.Namespace, tmp: Path) -> None:
    url = args.database_url or f"sqlite:///{tmp / 'idp.db'}"
    upgrade(url)
    # The same Argon2 and pruning settings as the functional tests (tests/conftest.py); every
    # sign-in comes from one address, whose budget is raised as bench/flows.py BENCH_ENV does.
    overrides = app_overrides(url, tmp / "instance", prune_interval=3600)
    app = create_app(overrides | {"anonymous_requests_per_address": 1_000_000})
    with app.app_context():
        app.extensions["idp"].keys.ensure_keys(db.session())
        db.session.commit()
    user = create_user(app)
    registered = create_client(app)
    tokens = RelyingParty(app.test_client(), registered).tokens_for(user)
    credentials = f"{registered.client_id}:{registered.client_secret}".encode()
    basic = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    machine = create_client(app, name="m2m", grant_types=["client_credentials"])
    m2m = f"{machine.client_id}:{machine.client_secret}".encode()
    m2m_basic = {"Authorization": "Basic " + base64.b64encode(m2m).decode()}
    pages = PasskeyPages(app.test_client())
    pages.sign_in_with_password(user)
    authenticator = SoftAuthenticator(backup_eligible=True, backed_up=True, counter_step=0)
    assert pages.add_passkey(authenticator).status_code == 201
    browser = app.test_client()
    # As a server's worker does once its application is built (idp/wsgi.py): what the set-up
    # made lives as long as the run, out of the cyclic collector's sight. Without it a full
    # collection walked all of it once in about 1,500 sign-ins, a cost no worker pays
    # (docs/performance-rounds.md, "The thirty-seventh round").
    gc.collect()
    gc.freeze()

    def expect_ok(response: Any) -> Any:
        assert response.status_code in (200, 302), (response.status_code, response.text[:200])
        return response

    def refresh() -> None:
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        tokens.update(expect_ok(browser.post("/token", data=form, headers=basic)).get_json())

    def passkey_sign_in() -> None:
        visitor = app.test_client()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": registered.client_id,
            "redirect_uri": registered.redirect_uri,
            "state": "s",
            "nonce": "n",
            "scope": "openid profile email offline_access",
            "code_challenge_method": "S256",
            "code_challenge": challenge.rstrip(b"=").decode(),
        }
        # The authorization endpoint shows the sign-in page itself (docs/architecture.md).
        page = expect_ok(visitor.get("/authorize", query_string=query)).text
        csrf = {"X-CSRFToken": csrf_meta(page)}
        options = page_options(page)  # the page embeds them (idp/static/login.js)
        body = {
            "challenge_id": options["challenge_id"],
            "next": "",
            "credential": authenticator.get(options["publicKey"]),
            "request": shown_pending_id(page),
        }
        verified = expect_ok(visitor.post("/login/passkey/verify", json=body, headers=csrf))
        callback = verified.get_json()["redirect"]  # the redirect URI with the code
        form = {
            "grant_type": "authorization_code",
            "redirect_uri": registered.redirect_uri,
            "code": parse_qs(urlsplit(callback).query)["code"][0],
            "code_verifier": verifier,
        }
        expect_ok(visitor.post("/token", data=form, headers=basic))

    if args.per_request:
        per_request(app, passkey_sign_in, args.per_request)
        return
    from bench.hello import app as hello_app

    hello = hello_app.test_client()
    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    rows: list[tuple[str, Flask | None, Callable[[], None], int]] = [
        ("hello-world (bench/hello.py)", None, lambda: expect_ok(hello.get("/hello")), 1),
        ("discovery", app, lambda: expect_ok(browser.get("/.well-known/openid-configuration")), 1),
        ("userinfo", app, lambda: expect_ok(browser.get("/userinfo", headers=bearer)), 1),
        (
            "introspection",
            app,
            lambda: expect_ok(
                browser.post("/introspect", data={"token": tokens["access_token"]}, headers=basic)
            ),
            1,
        ),
        ("refresh grant", app, refresh, 1),
        (
            "client credentials",
            app,
            lambda: expect_ok(
                browser.post("/token", data={"grant_type": "client_credentials"}, headers=m2m_basic)
            ),
            1,
        ),
        ("passkey sign-in (3 requests)", app, passkey_sign_in, 5),
    ]
    print("| request | Python calls | SQL statements | " + " | ".join(PACKAGES) + " |")
    print("|---|---|---|" + "---|" * len(PACKAGES))
    for name, target_app, operation, divisor in rows:
        line = anatomy(target_app, operation, max(1, args.repeat // divisor))
        print(f"| {name} | {line} |", flush=True)


def per_request(app: Flask, sign_in: Callable[[], None], count: int) -> None:
    """Each request's thread CPU per sign-in, by path: ``time.thread_time`` around the test
    client's ``open``, which includes the client's own work (the environ, the cookies)."""
    spent: defaultdict[str, float] = defaultdict(float)

    class TimedClient(FlaskClient):
        def open(self, *args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return super().open(*args, **kwargs)
            finally:
                path = str(args[0] if args else kwargs.get("path", "")).split("?", 1)[0]
                spent[path] += time.thread_time() - started

    app.test_client_class = TimedClient
    for _ in range(50):
        sign_in()
    spent.clear()
    started = time.thread_time()
    for _ in range(count):
        sign_in()
    whole = time.thread_time() - started
    print("| request | ms of thread CPU per sign-in |\n|---|---|")
    for path, seconds in spent.items():
        print(f"| {path} | {1000 * seconds / count:.2f} |")
    print(f"| the whole sign-in, the test authenticator included | {1000 * whole / count:.2f} |")


if __name__ == "__main__":
    main()
