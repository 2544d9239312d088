"""The multi-node fixture: three idp nodes on one PostgreSQL database and one Redis, behind
haproxy doing round-robin (tests/multinode/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import throwaway_postgres_database
from tests.multinode.cluster import Cluster, UserAgent, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with (
        throwaway_postgres_database() as url,
        start_cluster(tmp_path_factory.mktemp("multinode"), url) as started,
    ):
        yield started


@pytest.fixture
def agent(cluster: Cluster) -> Iterator[UserAgent]:
    with UserAgent(cluster) as browser:
        yield browser
