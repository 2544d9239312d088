"""Prometheus metrics (docs/operations.md, "Metrics"): /metrics behind a bearer token, absent
without one; counts summed over every worker of a live ``idp serve --production``; label values
bounded (Flask endpoint names, never raw paths). Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from idp import create_app
from tests.conftest import app_overrides, throwaway_postgres_database
from tests.support.http_flows import RelyingParty, Visitor, query_of
from tests.support.live import LiveIdp, start_live_idp

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
    if request.param == "sqlite":
        with start_live_idp(directory, production=True, env=env, separate_stderr=True) as idp:
            yield idp
    else:
        with (
            throwaway_postgres_database() as url,
            start_live_idp(
                directory, database_url=url, production=True, env=env, separate_stderr=True
            ) as idp,
        ):
            yield idp


def _parallel(count: int, work: Any) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: work(), range(count)))


def _worker_pids(idp: LiveIdp, endpoint: str) -> set[int]:
    assert idp.stderr_path is not None
    records = [json.loads(line) for line in idp.stderr_path.read_text().splitlines()]
    return {r["pid"] for r in records if r.get("endpoint") == endpoint and "duration_ms" in r}


def test_sign_ins_and_token_grants_are_counted_over_every_worker(node: LiveIdp) -> None:
    email = f"counted-{secrets.token_hex(3)}@example.com"
    node.create_user(email, PASSWORD)
    registered = node.create_client(name="Metrics RP", redirect_uris=[REDIRECT_URI],
                                    first_party=True)  # fmt: skip
    rp = RelyingParty(node.url, registered["client_id"], registered["client_secret"], REDIRECT_URI)
    before, _ = scrape(node)

    def sign_in(password: str) -> int:
        visitor = Visitor(node.url)
        try:
            return visitor.password_step(email, password).status_code
        finally:
            visitor.close()

    # Parallel requests, so that both workers take some (checked below from the log's pids).
    assert _parallel(6, lambda: sign_in(PASSWORD)) == [302] * 6
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

    after, _ = scrape(node)
    sign_ins = "idp_sign_in_attempts_total"
    assert delta(before, after, sign_ins, method="password", outcome="success") == 7
    assert delta(before, after, sign_ins, method="password", outcome="failure") == 3
    grants = "idp_token_requests_total"
    assert delta(before, after, grants, grant_type="client_credentials", outcome="success") == 8
    assert delta(before, after, grants, grant_type="authorization_code", outcome="success") == 1
    assert delta(before, after, grants, grant_type="authorization_code",
                 outcome="invalid_grant") == 1  # fmt: skip
    assert delta(before, after, grants, grant_type="refresh_token", outcome="success") == 1
    assert delta(before, after, grants, grant_type="other",
                 outcome="unsupported_grant_type") == 1  # fmt: skip
    token_requests = "idp_http_requests_total"
    assert delta(before, after, token_requests, endpoint="oidc.token", method="POST",
                 status="200") == 10  # fmt: skip
    latency = "idp_http_request_duration_seconds_count"
    assert delta(before, after, latency, endpoint="oidc.token", method="POST") == 12
    # The totals above came from more than one worker: the scrape summed their files.
    assert len(_worker_pids(node, "oidc.token") | _worker_pids(node, "login.login")) >= 2


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
