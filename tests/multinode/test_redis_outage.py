"""Redis stopped under three live nodes (docs/operations.md, "When a dependency fails"; docs/
security.md, "Faults and degraded dependencies").

The cluster has a private redis-server (tests/support/redis_server.py), stopped by its PID in
the middle of the test: every node stays ready and in the balancer, refresh, userinfo, discovery
and JWKS keep working on every node, and a password sign-in, which needs the attempt counters,
gets the 503 "temporarily unavailable" page, each refusal audited to the database. When Redis is
back, sign-in works again once the refusal's ``Retry-After`` has passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from idp.models import AuditEvent
from tests.conftest import throwaway_postgres_database
from tests.multinode.cluster import (
    NODE_NAMES,
    TIMEOUT,
    Authorization,
    Cluster,
    UserAgent,
    authorize,
    code_of,
    exchange,
    login_page,
    password_step,
    refresh,
    userinfo,
)
from tests.multinode.cluster import start_cluster as start_three_nodes
from tests.support.factories import rows
from tests.support.redis_server import PrivateRedis, private_redis

pytestmark = pytest.mark.multinode

PASSWORD = "three nodes and no redis"


@pytest.fixture(scope="module")
def cluster_and_redis(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, PrivateRedis]]:
    directory = tmp_path_factory.mktemp("redis-outage")
    with (
        private_redis(directory / "redis") as redis_server,
        throwaway_postgres_database() as url,
        start_three_nodes(directory / "cluster", url, redis_url=redis_server.url) as cluster,
    ):
        yield cluster, redis_server


def password_sign_in(agent: UserAgent, request: Authorization, email: str) -> dict[str, str]:
    response = authorize(agent, request)
    csrf, pending = login_page(agent, response)
    signed_in = password_step(agent, email, PASSWORD, csrf=csrf, pending=pending)
    token = exchange(agent, request, code_of(agent, request, signed_in))
    assert token.status_code == 200, agent.describe()
    tokens: dict[str, str] = token.json()
    return tokens


def test_with_redis_stopped_nodes_stay_ready_tokens_work_and_sign_in_is_a_503_page(
    cluster_and_redis: tuple[Cluster, PrivateRedis],
) -> None:
    cluster, redis_server = cluster_and_redis
    email, _ = cluster.new_user(PASSWORD)
    client = cluster.new_client()
    with UserAgent(cluster) as agent:
        request = Authorization(client)
        tokens = password_sign_in(agent, request, email)

        redis_server.stop()
        try:
            # Ready, every node: asked directly, and still in the balancer.
            for node in NODE_NAMES:
                ready = requests.get(cluster.node_url(node) + "/readyz", timeout=TIMEOUT)
                assert ready.status_code == 200, (node, ready.text)
                assert ready.json()["checks"] == {"database": "ok"}

            # Refresh and userinfo on every node.
            start = agent.mark()
            current = tokens
            for _ in NODE_NAMES:
                rotated = refresh(agent, request, current["refresh_token"])
                assert rotated.status_code == 200, agent.describe()
                current = rotated.json()
                assert userinfo(agent, current["access_token"]).status_code == 200
            token_nodes = [node for node, line in zip(agent.nodes_since(start),
                                                      agent.trail[start:], strict=True)
                           if "/token" in line]  # fmt: skip
            assert set(token_nodes) == set(NODE_NAMES), agent.describe()
            for path in ("/.well-known/openid-configuration", "/jwks"):
                assert agent.get(path).status_code == 200, agent.describe()

            # A password sign-in needs the counters: refused on every node with the 503 page.
            with UserAgent(cluster) as visitor:
                csrf, _ = login_page(visitor, "/login")
                for _ in NODE_NAMES:
                    refused = password_step(visitor, email, PASSWORD, csrf=csrf)
                    assert refused.status_code == 503, visitor.describe()
                    assert refused.headers["Content-Type"].startswith("text/html")
                    assert "unavailable" in refused.text.lower()
                    assert int(refused.headers["Retry-After"]) > 0
                assert set(visitor.served_by) == set(NODE_NAMES), visitor.describe()

            # Each node's first refusal audited, by that node (one row per worker and breaker
            # window, docs/operations.md, "Redis"), each counting itself alone.
            refusals = rows(cluster.setup_app, AuditEvent,
                            AuditEvent.kind == "dependency.unavailable")  # fmt: skip
            assert len(refusals) == len(NODE_NAMES)
            assert {(e.outcome, e.details["dependency"], e.details["endpoint"])
                    for e in refusals} == {("failure", "redis", "login.login")}  # fmt: skip
            assert [e.details["refused"] for e in refusals] == [1] * len(NODE_NAMES)

            # The balancer kept every node in rotation throughout.
            assert cluster.balancer.server_states() == dict.fromkeys(NODE_NAMES, "UP")
        finally:
            redis_server.start()

        # Redis back: after the refusal's Retry-After, each worker's circuit breaker lets a
        # request probe it (docs/operations.md, "Redis"), and sign-in works again; the tokens
        # from the outage still refresh.
        time.sleep(int(refused.headers["Retry-After"]))
        with UserAgent(cluster) as later:
            password_sign_in(later, Authorization(client), email)
        assert refresh(agent, request, current["refresh_token"]).status_code == 200
