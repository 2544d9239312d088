"""Health and readiness (docs/operations.md, "Probes"): /healthz says the process answers;
/readyz says whether the node can serve its core traffic (the database answers and takes writes;
Redis only with ``readiness_requires_redis``), naming the dependency that failed and nothing
more; /healthz/dependencies, behind the metrics token, names every dependency's state. Live
servers for Redis, the Flask app for a dead database."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from idp import create_app
from tests.conftest import app_overrides, throwaway_postgres_database
from tests.support.apps import app_on
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty
from tests.support.live import LiveIdp, free_port, start_live_idp

pytestmark = pytest.mark.minutes(1)

REDIS_URL = "redis://127.0.0.1:6379/0"
METRICS_TOKEN = "ops-scrape-" + "t" * 40
#: What a readiness answer may say: anything else (a host, a port, an exception) is internals.
READINESS_KEYS = {"status", "checks"}


def test_healthz_says_the_process_answers(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_ready_with_the_database_alone(app: Flask) -> None:
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok"}}


def test_a_redis_outage_leaves_the_node_ready_by_default(tmp_path: Path) -> None:
    """Refresh, userinfo, discovery and JWKS need no Redis: a balancer must not take every node
    out because Redis is down (only the sign-ins that need its counters stop)."""
    with app_on("sqlite", tmp_path) as before:  # signed in while the counters worked
        registered = create_client(before)
        tokens = RelyingParty(before.test_client(), registered).tokens_for(create_user(before))
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(app_overrides(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path,
                                   redis_url=dead_redis))  # fmt: skip
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ok", "checks": {"database": "ok"}}
    rp = RelyingParty(client, registered)
    renewed = rp.refresh(tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text
    assert rp.userinfo(renewed.get_json()["access_token"]).status_code == 200
    assert client.get("/jwks").status_code == 200


def test_readyz_names_an_unreachable_database_without_internals(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://idp:db-password@127.0.0.1:{port}/idp"
    dead = create_app(app_overrides(url, tmp_path))
    response = dead.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "checks": {"database": "unavailable"}}
    for internal in (str(port), "db-password", "psycopg", "refused", "127.0.0.1"):
        assert internal not in response.text
    # The liveness probe stays green: restarting the node would not bring the database back.
    assert dead.test_client().get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def closed_redis_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node_without_redis(
    tmp_path_factory: pytest.TempPathFactory, closed_redis_port: int
) -> Iterator[LiveIdp]:
    """A production node whose IDP_REDIS_URL points at a port where nothing listens, told that
    it cannot work without Redis (``readiness_requires_redis``)."""
    env = {"IDP_REDIS_URL": f"redis://:redis-password@127.0.0.1:{closed_redis_port}/0",
           "IDP_METRICS_TOKEN": METRICS_TOKEN,
           "IDP_READINESS_REQUIRES_REDIS": "true"}  # fmt: skip
    directory = tmp_path_factory.mktemp("ops-dead-redis")
    with start_live_idp(directory, production=True, env=env, separate_stderr=True) as idp:
        yield idp


def test_readyz_is_503_naming_redis_when_redis_does_not_answer(
    node_without_redis: LiveIdp, closed_redis_port: int
) -> None:
    response = requests.get(node_without_redis.url + "/readyz", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert set(body) == READINESS_KEYS
    assert body == {"status": "unavailable",
                    "checks": {"database": "ok", "redis": "unavailable"}}  # fmt: skip
    for internal in (str(closed_redis_port), "redis-password", "Connection", "Error"):
        assert internal not in response.text
    assert requests.get(node_without_redis.url + "/healthz", timeout=10).status_code == 200


def test_the_reason_redis_failed_goes_to_the_log_and_the_503_to_the_error_count(
    node_without_redis: LiveIdp,
) -> None:
    assert requests.get(node_without_redis.url + "/readyz", timeout=10).status_code == 503
    assert node_without_redis.stderr_path is not None
    records = [json.loads(x) for x in node_without_redis.stderr_path.read_text().splitlines()]
    reasons = [r for r in records if r["message"].startswith("readiness: Redis is unavailable")]
    assert reasons
    assert all(r["level"] == "WARNING" and r["endpoint"] == "ops.readyz" for r in reasons)
    assert all("redis-password" not in r["message"] for r in reasons)
    scrape = requests.get(
        node_without_redis.url + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=10,
    )
    errors = [
        line
        for line in scrape.text.splitlines()
        if line.startswith('idp_http_server_errors_total{endpoint="ops.readyz"}')
    ]
    assert errors
    assert float(errors[0].split()[-1]) >= 2


def test_readyz_is_ready_with_the_database_and_a_live_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("ops-redis")
    env = {"IDP_REDIS_URL": REDIS_URL, "IDP_READINESS_REQUIRES_REDIS": "true"}
    with start_live_idp(directory, production=True, env=env) as idp:
        response = requests.get(idp.url + "/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


# -- the health document ------------------------------------------------------------------------
def scrape_headers(token: str = METRICS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_health_document_names_a_redis_outage_as_degraded_without_internals(
    tmp_path: Path,
) -> None:
    port = free_port()
    dead_redis = f"redis://:redis-password@127.0.0.1:{port}/0"
    with app_on("sqlite", tmp_path, redis_url=dead_redis, metrics_token=METRICS_TOKEN) as app:
        response = app.test_client().get("/healthz/dependencies", headers=scrape_headers())
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["ready"] is True
    assert body["dependencies"]["database"]["state"] == "ok"
    assert body["dependencies"]["database"]["required_for_readiness"] is True
    redis_state = body["dependencies"]["redis"]
    assert redis_state["state"] == "unavailable"
    assert redis_state["reason"] == "ConnectionError"
    assert redis_state["required_for_readiness"] is False
    assert "sign-in" in redis_state["needed_for"]
    assert response.headers["Cache-Control"] == "no-store"
    for internal in (str(port), "redis-password", "127.0.0.1", "refused"):
        assert internal not in response.text


def test_the_health_document_is_503_when_the_node_is_not_ready(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://idp:db-password@127.0.0.1:{free_port()}/idp"
    dead = create_app(app_overrides(url, tmp_path, metrics_token=METRICS_TOKEN))
    response = dead.test_client().get("/healthz/dependencies", headers=scrape_headers())
    assert response.status_code == 503
    body = response.get_json()
    assert (body["status"], body["ready"]) == ("unavailable", False)
    assert body["dependencies"]["database"]["state"] == "unavailable"
    assert "db-password" not in response.text


def test_the_health_document_is_for_the_scraper_only(tmp_path: Path) -> None:
    """Behind the metrics token like /metrics: it tells an outsider when the attempt counters
    are down. Without a token configured it does not exist."""
    with app_on("sqlite", tmp_path, metrics_token=METRICS_TOKEN) as app:
        client = app.test_client()
        assert client.get("/healthz/dependencies").status_code == 401
        wrong = scrape_headers("x" * len(METRICS_TOKEN))
        assert client.get("/healthz/dependencies", headers=wrong).status_code == 401
        assert client.get("/healthz/dependencies", headers=scrape_headers()).status_code == 200
    with app_on("sqlite", tmp_path / "no-token") as app:
        assert app.test_client().get("/healthz/dependencies").status_code == 404


# -- backup and restore, as docs/operations.md tells --------------------------------------------
def _state_of(idp: LiveIdp, client: dict[str, str]) -> tuple[set[str], dict[str, object], int]:
    """What a restore must bring back: the users, the published keys, a working client secret."""
    users = {u["email"] for u in idp.cli("users", "list", "--json")}
    jwks = requests.get(idp.url + "/jwks", timeout=10).json()
    grant = requests.post(
        idp.url + "/token",
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )
    return users, jwks, grant.status_code


def _populate(idp: LiveIdp) -> dict[str, str]:
    idp.create_user("kept@example.com", "a password worth restoring")
    client: dict[str, str] = idp.create_client(
        name="Backed up", redirect_uris=["http://localhost:9/cb"], first_party=True
    )
    return client


@pytest.mark.parametrize("method", ["python", "sqlite3"])
def test_sqlite_online_backup_restores_a_working_node(
    tmp_path_factory: pytest.TempPathFactory, method: str
) -> None:
    original_dir = tmp_path_factory.mktemp("backup-source")
    restored_dir = tmp_path_factory.mktemp("backup-restored")
    with start_live_idp(original_dir, production=True) as original:
        client = _populate(original)
        before = _state_of(original, client)
        # While the node serves, as the guide says: SQLite's online backup, never a file copy.
        source, target = original_dir / "idp.db", restored_dir / "idp.db"
        if method == "python":
            subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
                            "sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))",
                            str(source), str(target)], check=True)  # fmt: skip
        else:
            subprocess.run(["sqlite3", str(source), f".backup '{target}'"], check=True)
    with start_live_idp(restored_dir, production=True) as restored:
        after = _state_of(restored, client)
    assert before[2] == 200
    assert after == before


def test_pg_dump_and_pg_restore_restore_a_working_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    dump = tmp_path_factory.mktemp("pg-dump") / "idp.dump"
    with (
        throwaway_postgres_database() as source_url,
        start_live_idp(
            tmp_path_factory.mktemp("pg-source"), database_url=source_url, production=True
        ) as original,
    ):
        client = _populate(original)
        before = _state_of(original, client)
        libpq = source_url.replace("postgresql+psycopg://", "postgresql://")
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", libpq], check=True)
    with throwaway_postgres_database() as target_url:
        libpq = target_url.replace("postgresql+psycopg://", "postgresql://")
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={libpq}", str(dump)], check=True)
        with start_live_idp(
            tmp_path_factory.mktemp("pg-restored"), database_url=target_url, production=True
        ) as restored:
            after = _state_of(restored, client)
    assert before[2] == 200
    assert after == before
