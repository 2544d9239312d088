"""Storage outages (docs/operations.md, "When a dependency fails"; docs/security.md, "Faults and
degraded dependencies").

- PostgreSQL stopped (a TCP proxy in front of the machine's PostgreSQL, cut by the test): the OAuth
  endpoints answer OAuth's JSON error with 503 and ``Retry-After``, pages a calm 503 page, the node
  is not ready but alive; nothing was spent by the failed requests, and everything works again
  when the database is back.
- PostgreSQL black-holed (every packet of the proxy's port dropped, tests/support/black_hole.py):
  an open connection is found dead by libpq's keepalives and ``tcp_user_timeout``, a 503 again.
- A PostgreSQL that refuses writes, and SQLite on a small, full file system (a tmpfs mounted by
  the test): ``/readyz`` says the database is not writable, and ready again once it is.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from sqlalchemy import create_engine, text, update
from werkzeug.test import TestResponse

from idp import database
from idp.database import is_outage
from idp.extensions import db
from idp.models import MaintenanceRun
from idp.services.health import SQLITE_MIN_FREE_BYTES, free_bytes
from tests.conftest import POSTGRES_URL, _build_app, throwaway_postgres_database
from tests.support.black_hole import black_hole
from tests.support.black_hole import unavailable as black_hole_unavailable
from tests.support.events import wait_for
from tests.support.factories import change, create_client, create_user
from tests.support.flow import RelyingParty
from tests.support.tcp_proxy import TcpProxy, tcp_proxy


@contextlib.contextmanager
def app_behind_proxy(instance: Path) -> Iterator[tuple[Flask, TcpProxy]]:
    """An app on a fresh PostgreSQL database reached through a proxy the test can cut."""
    with throwaway_postgres_database() as url:
        parts = urlsplit(url)
        assert parts.hostname
        assert parts.port
        with tcp_proxy(parts.hostname, parts.port) as proxy:
            proxied = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
            app = _build_app(proxied, instance)
            try:
                yield app, proxy
            finally:
                with app.app_context():
                    db.session.remove()
                    db.engine.dispose()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, TcpProxy]]:
    with app_behind_proxy(tmp_path_factory.mktemp("proxied")) as pair:
        yield pair


def assert_oauth_unavailable(response: TestResponse) -> None:
    """RFC 6749 5.2's JSON error shape, 503, and when to come back (RFC 9110 10.2.3)."""
    assert response.status_code == 503, response.text
    assert response.mimetype == "application/json"
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert int(response.headers["Retry-After"]) > 0
    assert response.headers["Cache-Control"] == "no-store"


def client_request(rp: RelyingParty, path: str, token: str) -> TestResponse:
    """An introspection or revocation request (RFC 7662 2.1, RFC 7009 2.1) with the client's
    ``client_secret_basic`` credentials."""
    secret = rp.registered.client_secret
    assert secret is not None
    return rp.browser.post(path, data={"token": token},
                           auth=(rp.registered.client_id, secret))  # fmt: skip


def test_with_the_database_stopped_oauth_endpoints_answer_json_503_and_recover(
    proxied: tuple[Flask, TcpProxy],
) -> None:
    app, proxy = proxied
    user = create_user(app, email="outage@example.com")
    registered = create_client(app)
    rp = RelyingParty(app.test_client(), registered)
    tokens = rp.tokens_for(user)
    assert rp.userinfo(tokens["access_token"]).status_code == 200

    proxy.cut()
    try:
        assert_oauth_unavailable(rp.refresh(tokens["refresh_token"]))
        assert_oauth_unavailable(rp.token({"grant_type": "client_credentials"}))
        assert_oauth_unavailable(rp.userinfo(tokens["access_token"]))
        for path in ("/introspect", "/revoke"):
            assert_oauth_unavailable(client_request(rp, path, tokens["access_token"]))
    finally:
        proxy.restore()

    # Back: the failed refresh spent nothing, the session's tokens work on.
    renewed = rp.refresh(tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert rp.userinfo(renewed.get_json()["access_token"]).status_code == 200


def test_with_the_database_stopped_pages_are_a_calm_503_and_the_node_is_alive_not_ready(
    proxied: tuple[Flask, TcpProxy],
) -> None:
    app, proxy = proxied
    client = app.test_client()
    rp = RelyingParty(client, create_client(app, name="Page RP"))
    assert client.get("/readyz").status_code == 200
    assert rp.authorize().status_code == 200  # the sign-in page
    proxy.cut()
    try:
        page = rp.authorize()  # the client is looked up in the database
        assert page.status_code == 503
        assert page.mimetype == "text/html"
        assert "Temporarily unavailable" in page.text
        assert int(page.headers["Retry-After"]) > 0
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json() == {"status": "unavailable",
                                    "checks": {"database": "unavailable"}}  # fmt: skip
        assert client.get("/healthz").status_code == 200
    finally:
        proxy.restore()
    assert client.get("/readyz").status_code == 200
    assert rp.authorize().status_code == 200  # the sign-in page again


#: How long a request may take before the test calls it hung: a guard far above the connect
#: timeout (idp.database ``POSTGRESQL_CONNECT_TIMEOUT``), not a measurement.
HUNG = 90


def test_a_database_that_accepts_connections_but_never_answers_is_a_503_not_a_hang(
    proxied: tuple[Flask, TcpProxy],
) -> None:
    """A database host that hangs (a frozen VM, a balancer in front of a server that is gone):
    connections are accepted and never answered. Each request gives up on connecting after the
    connect timeout and answers 503 with ``Retry-After`` (RFC 9110 15.6.4, 10.2.3), and the
    node is not ready, instead of holding every worker thread for as long as the host hangs."""
    app, proxy = proxied
    user = create_user(app, email="hung@example.com")
    registered = create_client(app, name="Hung RP")
    rp = RelyingParty(app.test_client(), registered)
    tokens = rp.tokens_for(user)
    client = app.test_client()

    pool = ThreadPoolExecutor(2)
    proxy.freeze()
    try:
        ready = pool.submit(client.get, "/readyz")
        refreshed = pool.submit(rp.refresh, tokens["refresh_token"])
        assert ready.result(timeout=HUNG).status_code == 503
        assert_oauth_unavailable(refreshed.result(timeout=HUNG))
    finally:
        proxy.restore()  # a hung request gets its connection closed, and ends
        pool.shutdown()
    assert client.get("/readyz").status_code == 200
    assert rp.refresh(tokens["refresh_token"]).status_code == 200  # the failed one spent nothing


@pytest.fixture
def quick_to_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """idp's dead-peer settings (idp.database) made short, so that each wait the test makes is
    short too: what is tested is that they are set, not their production values."""
    monkeypatch.setattr(database, "POSTGRESQL_CONNECT_TIMEOUT_SECONDS", 2)
    monkeypatch.setattr(database, "POSTGRESQL_TCP_USER_TIMEOUT_MS", 2000)
    monkeypatch.setattr(database, "POSTGRESQL_KEEPALIVES_IDLE_SECONDS", 1)
    monkeypatch.setattr(database, "POSTGRESQL_KEEPALIVES_INTERVAL_SECONDS", 1)
    monkeypatch.setattr(database, "POSTGRESQL_KEEPALIVES_COUNT", 2)


def needs_black_hole() -> None:
    reason = black_hole_unavailable()
    if reason:
        pytest.skip(reason)


def test_a_database_whose_packets_are_black_holed_is_a_503_not_a_hang(
    tmp_path: Path, quick_to_give_up: None
) -> None:
    """A partition (or a host that vanished) drops every packet of the node's open connections:
    nothing refuses, nothing acknowledges. The pooled connection's ``BEGIN`` gives up after
    libpq's ``tcp_user_timeout`` and the new connection after ``connect_timeout``, then the
    refresh answers 503 with ``Retry-After`` (RFC 9110 15.6.4), instead of holding its thread
    for the kernel's retransmissions (about 15 minutes); once the packets flow the token that
    failed still works."""
    needs_black_hole()
    with app_behind_proxy(tmp_path) as (app, proxy):
        user = create_user(app, email="partition@example.com")
        rp = RelyingParty(app.test_client(), create_client(app, name="Partition RP"))
        tokens = rp.tokens_for(user)  # the pool holds an open connection through the proxy
        pool = ThreadPoolExecutor(1)
        try:
            with black_hole(proxy.port):
                refreshed = pool.submit(rp.refresh, tokens["refresh_token"])
                assert_oauth_unavailable(refreshed.result(timeout=HUNG))
        finally:
            pool.shutdown()
        renewed = rp.refresh(tokens["refresh_token"])
        assert renewed.status_code == 200, renewed.text


def test_a_statement_the_database_stops_answering_midway_fails_instead_of_waiting(
    tmp_path: Path, quick_to_give_up: None
) -> None:
    """The statement reached the server (acknowledged, running), then every packet is dropped:
    with no data of its own waiting for an acknowledgement, only keepalive probes can tell the
    client the server is gone (libpq's default waits two hours before the first). The statement
    fails, as an outage (a 503 where a request sent it)."""
    needs_black_hole()
    with app_behind_proxy(tmp_path) as (app, proxy):
        with app.app_context():
            name = db.engine.url.database
        failures: list[BaseException] = []

        def long_statement() -> None:
            with app.app_context():
                try:
                    db.session.execute(text("SELECT pg_sleep(600) /* held midway */"))
                except Exception as error:
                    failures.append(error)
                finally:
                    db.session.remove()

        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        running = "SELECT count(*) FROM pg_stat_activity WHERE datname = :name AND state = " \
                  "'active' AND query LIKE '%held midway%' AND pid <> pg_backend_pid()"  # fmt: skip

        def started() -> bool:
            with admin.connect() as connection:
                return bool(connection.execute(text(running), {"name": name}).scalar_one())

        worker = threading.Thread(target=long_statement, daemon=True)
        try:
            worker.start()
            wait_for(started, "the statement running on the server")
            with black_hole(proxy.port):
                worker.join(HUNG)
                assert not worker.is_alive(), "the statement waited for a server that is gone"
        finally:
            with admin.connect() as connection:  # the server's side of it, ended
                connection.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE query LIKE '%held midway%' AND pid <> "
                                        "pg_backend_pid()"))  # fmt: skip
            admin.dispose()
        [failure] = failures
        assert is_outage(failure), repr(failure)


def test_an_unexpected_error_at_an_oauth_endpoint_is_a_json_500_not_a_503(
    proxied: tuple[Flask, TcpProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an outage asks clients to come back later; a bug is a plain ``server_error``."""
    app, _ = proxied
    registered = create_client(app, name="Broken RP")
    rp = RelyingParty(app.test_client(), registered)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug, not an outage")

    monkeypatch.setattr("idp.oidc.token_issue.mint_access_token", broken)
    response = rp.token({"grant_type": "client_credentials"})
    assert response.status_code == 500
    assert response.get_json()["error"] == "server_error"
    assert "Retry-After" not in response.headers


def test_a_read_only_postgresql_makes_the_node_not_ready(proxied: tuple[Flask, TcpProxy]) -> None:
    """A database that answers but refuses writes (a replica after a failover, here
    ``default_transaction_read_only``): ``SELECT 1`` succeeds, only a committed write tells."""
    app, _ = proxied
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    with app.app_context():
        name = db.engine.url.database

    def read_only(value: str) -> None:
        with app.app_context():
            db.session.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only '
                                    f"= {value}"))  # fmt: skip
            db.session.commit()
            db.engine.dispose()  # the setting applies to new connections

    read_only("on")
    try:
        refused = client.get("/readyz")
        assert refused.status_code == 503
        assert refused.get_json() == {"status": "unavailable",
                                      "checks": {"database": "not_writable"}}  # fmt: skip
    finally:
        with app.app_context():
            db.session.execute(text("SET default_transaction_read_only = off"))
            db.session.commit()
        read_only("off")
    assert client.get("/readyz").status_code == 200


def end_every_backend(app: Flask) -> int:
    """What a PostgreSQL restart does to the node's pooled connections: each one's server process
    ends (``pg_terminate_backend``), seen by the node only when it next uses the connection.
    Returns how many were ended."""
    with app.app_context():
        name = db.engine.url.database
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            ended = connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()) AS ended"
                ),
                {"name": name},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(ended)


def fill_the_pool(app: Flask, connections: int) -> None:
    """``connections`` connections used and back in the pool, idle."""
    with app.app_context():
        held = [db.engine.connect() for _ in range(connections)]
        for connection in held:
            connection.execute(text("SELECT 1"))
        for connection in held:
            connection.close()


def test_after_postgresql_ended_every_backend_no_request_fails(tmp_path: Path) -> None:
    """No request fails on a stale connection (docs/operations.md, "PostgreSQL stopped, and
    back"): each checkout's BEGIN is the check, and a failed one replaces the connection and every
    older one before the request runs anything (idp/postgresql.py). Without a check at checkout,
    the first request on each stale connection would answer 503."""
    with throwaway_postgres_database() as url:
        app = _build_app(url, tmp_path)
        try:
            rp = RelyingParty(app.test_client(), create_client(app))
            tokens = rp.tokens_for(create_user(app, email="restart@example.com"))
            machine = create_client(app, name="m2m", grant_types=["client_credentials"])
            m2m = RelyingParty(app.test_client(), machine)

            # One by one: a write, reads, a refresh and a sign-in, all on stale connections.
            fill_the_pool(app, 4)
            assert end_every_backend(app) >= 4
            assert m2m.token({"grant_type": "client_credentials"}).status_code == 200
            assert rp.userinfo(tokens["access_token"]).status_code == 200
            assert client_request(rp, "/introspect", tokens["access_token"]).status_code == 200
            renewed = rp.refresh(tokens["refresh_token"])
            assert renewed.status_code == 200, renewed.text
            tokens = renewed.get_json()
            assert "access_token" in rp.tokens_for(create_user(app, email="after@example.com"))

            # At once: eight requests from as many threads, each checking out a stale connection.
            fill_the_pool(app, 4)
            assert end_every_backend(app) >= 4

            def userinfo(_: int) -> int:
                return (
                    RelyingParty(app.test_client(), rp.registered)
                    .userinfo(tokens["access_token"])
                    .status_code
                )

            with ThreadPoolExecutor(max_workers=8) as pool:
                assert list(pool.map(userinfo, range(8))) == [200] * 8
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


# -- SQLite on a file system that refuses writes ------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` (the tests run as root), unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True, capture_output=True)


@pytest.fixture
def sqlite_on_tmpfs(tmp_path: Path) -> Iterator[tuple[Flask, Path]]:
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        app = _build_app(f"sqlite:///{disk / 'idp.db'}", tmp_path / "instance")
        try:
            yield app, disk
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a file until the file system is full, or has only ``leave`` bytes free."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while free_bytes(disk) - 65536 >= leave:
            handle.write(b"\0" * 65536)
        if not leave:
            while True:
                handle.write(b"\0" * 4096)
    return filler


def test_sqlite_on_a_full_disk_makes_the_node_not_ready_until_there_is_room(
    sqlite_on_tmpfs: tuple[Flask, Path],
) -> None:
    app, disk = sqlite_on_tmpfs
    client = app.test_client()
    assert client.get("/readyz").get_json() == {"status": "ok", "checks": {"database": "ok"}}

    filler = fill(disk)
    full = client.get("/readyz")
    assert full.status_code == 503
    assert full.get_json() == {"status": "unavailable", "checks": {"database": "not_writable"}}
    assert client.get("/healthz").status_code == 200

    filler.unlink()
    assert client.get("/readyz").status_code == 200


def test_sqlite_with_less_than_a_mebibyte_left_is_not_ready_before_writes_fail(
    sqlite_on_tmpfs: tuple[Flask, Path],
) -> None:
    """SQLite's write-ahead log reuses its file's space, so a small write may still commit on a
    nearly full disk while larger ones fail: readiness also asks for SQLITE_MIN_FREE_BYTES."""
    app, disk = sqlite_on_tmpfs
    client = app.test_client()
    fill(disk, leave=SQLITE_MIN_FREE_BYTES // 2)
    with app.app_context():  # writes still work...
        change(app, update(MaintenanceRun).values(last_run_at=None))
    low = client.get("/readyz")  # ... but the node asks for no more traffic
    assert low.status_code == 503
    assert low.get_json()["checks"] == {"database": "not_writable"}
