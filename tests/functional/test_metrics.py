"""Prometheus metrics (docs/operations.md, "Metrics"): /metrics behind a bearer token, absent
without one; counts summed over every worker of a live ``idp serve --production``; label values
bounded (Flask endpoint names, never raw paths). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from idp import create_app
from idp.services.rate_limits import FREE_FAILURES
from tests.conftest import app_overrides
from tests.support.apps import live_on
from tests.support.gates import RequestGates
from tests.support.http_flows import RelyingParty, Visitor, query_of
from tests.support.live import LiveIdp, children, start_live_idp

METRICS_TOKEN = "scrape-" + "t" * 40
REDIRECT_URI = "http://localhost:9/callback"
PASSWORD = "metrics are counted everywhere"
LOCKOUT_THRESHOLD = 5

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(idp: LiveIdp) -> tuple[Samples, str]:
    response = requests.get(
        idp.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, response.text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


# -- the endpoint ---------------------------------------------------------------------------------
def test_metrics_endpoint_does_not_exist_without_a_configured_token(app: Flask) -> None:
    response = app.test_client().get("/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    ["", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", f"Bearer {METRICS_TOKEN[:-1]}",
     "Bearer ", METRICS_TOKEN],
)  # fmt: skip
def test_metrics_refuse_a_missing_or_wrong_token(tmp_path: Any, authorization: str) -> None:
    app = create_app(
        app_overrides(f"sqlite:///{tmp_path / 'idp.db'}", tmp_path, metrics_token=METRICS_TOKEN)
    )
    headers = {"Authorization": authorization} if authorization else {}
    response = app.test_client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"idp_" not in response.data
    right = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert right.status_code == 200
    assert b"idp_http_requests_total" in right.data


def test_a_short_metrics_token_is_refused_at_start(tmp_path: Any) -> None:
    from idp.settings import SettingsError

    with pytest.raises(SettingsError, match="metrics_token"):
        create_app(app_overrides("sqlite://", tmp_path, metrics_token="short"))


# -- a live multi-worker node ---------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    directory = tmp_path_factory.mktemp(f"metrics-{request.param}")
    env = {"IDP_METRICS_TOKEN": METRICS_TOKEN, "IDP_PASSKEY_PROMPT": "false",
           "IDP_LOCKOUT_THRESHOLD": str(LOCKOUT_THRESHOLD)}  # fmt: skip
    with live_on(request.param, directory, production=True, env=env, separate_stderr=True) as idp:
        yield idp


def _parallel(count: int, work: Any) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: work(), range(count)))


def _log_length(idp: LiveIdp) -> int:
    assert idp.stderr_path is not None
    return len(idp.stderr_path.read_text().splitlines())


def _worker_pids(idp: LiveIdp, since_line: int) -> set[int]:
    """The workers that answered sign-ins or token requests after line ``since_line``."""
    assert idp.stderr_path is not None
    lines = idp.stderr_path.read_text().splitlines()[since_line:]
    records = [json.loads(line) for line in lines]
    return {r["pid"] for r in records if r.get("endpoint") in ("oidc.token", "login.login")
            and "duration_ms" in r}  # fmt: skip


def test_sign_ins_and_token_grants_are_counted_over_every_worker(node: LiveIdp) -> None:
    email = f"counted-{secrets.token_hex(3)}@example.com"
    node.create_user(email, PASSWORD)
    registered = node.create_client(name="Metrics RP", redirect_uris=[REDIRECT_URI],
                                    first_party=True)  # fmt: skip
    rp = RelyingParty(node.url, registered["client_id"], registered["client_secret"], REDIRECT_URI)
    before, _ = scrape(node)
    log_start = _log_length(node)

    def sign_in(password: str) -> int:
        visitor = Visitor(node.url)
        try:
            return visitor.password_step(email, password).status_code
        finally:
            visitor.close()

    # Parallel requests, so that both workers take some (checked below from the log's pids). At
    # most FREE_FAILURES of one account at once: attempts in flight count until they succeed
    # (docs/security.md), so a sixth at the same moment would wait out a backoff.
    assert _parallel(FREE_FAILURES, lambda: sign_in(PASSWORD)) == [302] * FREE_FAILURES
    assert _parallel(3, lambda: sign_in("wrong " + PASSWORD)) == [401] * 3
    assert [r.status_code for r in _parallel(8, rp.client_credentials)] == [200] * 8

    browser = Visitor(node.url)
    authorization = browser.authorize(rp.client_id, REDIRECT_URI)
    first = browser.password_step(email, PASSWORD, authorization.pending_id,
                                  form_path=authorization.location)  # fmt: skip
    callback = browser.follow_to(first, REDIRECT_URI)
    tokens = rp.exchange(callback, authorization)
    rp.refresh(tokens["refresh_token"])
    replay = rp.post("/token", {"grant_type": "authorization_code",
                                "code": query_of(callback)["code"], "redirect_uri": REDIRECT_URI,
                                "code_verifier": authorization.verifier})  # fmt: skip
    assert replay.status_code == 400
    assert rp.post("/token", {"grant_type": "urn:example:unknown"}).status_code == 400
    # The sums below prove the aggregation only if both workers answered some of these requests;
    # the kernel decides which worker accepts a connection: more grants until the log shows two.
    extra = 0
    while len(_worker_pids(node, log_start)) < 2:
        assert extra < 80, "every request landed on the same worker"
        assert [r.status_code for r in _parallel(8, rp.client_credentials)] == [200] * 8
        extra += 8

    after, _ = scrape(node)
    sign_ins = "idp_sign_in_attempts_total"
    assert delta(before, after, sign_ins, method="password", outcome="success") == FREE_FAILURES + 1
    assert delta(before, after, sign_ins, method="password", outcome="failure") == 3
    grants = "idp_token_requests_total"
    assert delta(before, after, grants, grant_type="client_credentials",
                 outcome="success") == 8 + extra  # fmt: skip
    assert delta(before, after, grants, grant_type="authorization_code", outcome="success") == 1
    assert delta(before, after, grants, grant_type="authorization_code",
                 outcome="invalid_grant") == 1  # fmt: skip
    assert delta(before, after, grants, grant_type="refresh_token", outcome="success") == 1
    assert delta(before, after, grants, grant_type="other",
                 outcome="unsupported_grant_type") == 1  # fmt: skip
    token_requests = "idp_http_requests_total"
    assert delta(before, after, token_requests, endpoint="oidc.token", method="POST",
                 status="200") == 10 + extra  # fmt: skip
    latency = "idp_http_request_duration_seconds_count"
    assert delta(before, after, latency, endpoint="oidc.token", method="POST") == 12 + extra


def test_a_lockout_is_counted_once_under_parallel_failures(node: LiveIdp) -> None:
    email = f"locked-{secrets.token_hex(3)}@example.com"
    node.create_user(email, PASSWORD)
    before, _ = scrape(node)

    def wrong() -> int:
        visitor = Visitor(node.url)
        try:
            return visitor.password_step(email, "wrong " + PASSWORD).status_code
        finally:
            visitor.close()

    attempts = LOCKOUT_THRESHOLD * 3
    assert set(_parallel(attempts, wrong)) == {401}
    after, _ = scrape(node)
    assert delta(before, after, "idp_lockouts_total", factor="pwd") == 1
    counted = sum(
        delta(before, after, "idp_sign_in_attempts_total", method="password", outcome=outcome)
        for outcome in ("failure", "throttled")
    )
    assert counted == attempts


def test_endpoint_labels_are_endpoint_names_never_paths(node: LiveIdp) -> None:
    secret = secrets.token_urlsafe(32)
    assert requests.get(f"{node.url}/login/link/{secret}", timeout=10).status_code == 400
    unknown = secrets.token_hex(8)
    assert requests.get(f"{node.url}/no-such-page/{unknown}", timeout=10).status_code == 404
    samples, text = scrape(node)
    assert secret not in text
    assert unknown not in text
    endpoints = {
        dict(labels)["endpoint"]
        for (name, labels) in samples
        if name == "idp_http_request_duration_seconds_count"
    }
    assert {"login.login_link", "none", "oidc.discovery"} <= endpoints
    assert all("/" not in endpoint for endpoint in endpoints)
    assert value(samples, "idp_http_requests_total", endpoint="login.login_link", method="GET",
                 status="400") >= 1  # fmt: skip


# -- workers that exit ----------------------------------------------------------------------------
def _gauge(samples: Samples) -> float:
    return value(samples, "idp_http_requests_in_progress") - 1  # the scrape itself


def test_killed_workers_keep_their_counts_and_leave_nothing_in_progress(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    directory = tmp_path_factory.mktemp("metrics-killed")
    # A sign-in held in flight on a gate the test never opens (idp.request_gate): its worker is
    # killed while it is counted in progress.
    gates = RequestGates.under(directory)
    env = {"IDP_METRICS_TOKEN": METRICS_TOKEN, **gates.env()}
    with start_live_idp(directory, production=True, env=env) as idp:
        idp.create_user("held@example.com", PASSWORD)
        # The held sign-in must die with its worker: not resent to the other one.
        visitor = Visitor(idp.url, resend_dropped=False)
        form = {"csrf_token": visitor.csrf_field("/login"), "email": "held@example.com",
                "password": PASSWORD}  # fmt: skip
        held = threading.Thread(
            target=lambda: _ignore_errors(
                visitor.post, "/login", data=form, headers=gates.header("held-sign-in")
            )
        )
        held.start()
        gates.wait_until_held("held-sign-in")
        assert _gauge(scrape(idp)[0]) == 1
        before, _ = scrape(idp)
        assert idp.process is not None
        workers = children(idp.process.pid)
        assert len(workers) >= 2
        for pid in workers:  # out of memory, say: no exit handler runs
            os.kill(pid, signal.SIGKILL)
        held.join(timeout=30)
        deadline = time.monotonic() + 30
        while True:  # the server starts new workers
            try:
                after, _ = scrape(idp)
                break
            except (requests.ConnectionError, AssertionError):
                assert time.monotonic() < deadline, idp.log_tail()
                time.sleep(0.2)
        assert not set(workers) & set(children(idp.process.pid))
        assert _gauge(after) == 0
        discovery = {"endpoint": "oidc.discovery", "method": "GET", "status": "200"}
        assert value(before, "idp_http_requests_total", **discovery) >= 1
        assert value(after, "idp_http_requests_total", **discovery) >= value(
            before, "idp_http_requests_total", **discovery
        )
        visitor.close()


def _ignore_errors(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except requests.RequestException:
        return  # the worker serving it was killed: that is the point


def test_dead_processes_lose_their_live_gauge_files_only(tmp_path: Path) -> None:
    from idp.metrics import _forget_dead_processes

    dead = 2**22 + 12345  # above the usual pid_max: no such process
    files = [f"gauge_livesum_{dead}.db", f"gauge_livesum_{os.getpid()}.db",
             f"counter_{dead}.db", f"histogram_{dead}.db"]  # fmt: skip
    for name in files:
        (tmp_path / name).write_bytes(b"")
    _forget_dead_processes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[1:])


def test_serve_empties_a_given_metrics_directory_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idp.metrics import MULTIPROC_ENV, multiprocess_directory

    (tmp_path / "counter_4242.db").write_bytes(b"stale")
    (tmp_path / "README").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with multiprocess_directory() as directory:
        assert directory == tmp_path
        assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
    assert tmp_path.exists()  # the operator's directory stays


def test_serve_makes_a_private_metrics_directory_and_removes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from idp.metrics import MULTIPROC_ENV, multiprocess_directory

    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_directory() as directory:
        assert os.environ[MULTIPROC_ENV] == str(directory)
        assert directory.is_dir()
        assert not any(directory.iterdir())
    assert not directory.exists()
    assert MULTIPROC_ENV not in os.environ
