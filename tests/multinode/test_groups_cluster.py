"""Access follows membership on every node (docs/admins.md, "Groups, per-app access and claim
maps"): a membership removed through the shared database is refused at once by a node other than
the one that issued the tokens, with no cache to wait for."""

from __future__ import annotations

import secrets
from urllib.parse import urljoin

import pytest
import requests

from idp.extensions import db
from idp.models import Client
from idp.services.groups import GroupService
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
    query_of,
)

pytestmark = pytest.mark.multinode

PASSWORD = "three nodes one database"


def test_refusal_on_another_node_right_after_membership_removal(
    cluster: Cluster, agent: UserAgent
) -> None:
    email, _ = cluster.new_user(PASSWORD)
    client = cluster.new_client()
    group = f"mn-{secrets.token_hex(3)}"
    with cluster.setup_app.app_context():
        service = GroupService(db.session())
        created = service.create(group)
        service.add_members(created, service.find_users([email]))
        service.set_allowed_groups(db.session.get(Client, client["client_id"]), [group])
        db.session.commit()

    request = Authorization(client)
    response = authorize(agent, request)
    csrf, pending = login_page(agent, response)
    signed_in = password_step(agent, email, PASSWORD, csrf=csrf, pending=pending)
    token = exchange(agent, request, code_of(agent, request, signed_in))
    assert token.status_code == 200, agent.describe()
    tokens = token.json()
    issued_by = agent.nodes_since(0)[-1]
    others = [node for node in NODE_NAMES if node != issued_by]

    with cluster.setup_app.app_context():
        service = GroupService(db.session())
        service.remove_members(service.require(group), service.find_users([email]))
        db.session.commit()

    # Right after, on every node (the other nodes included): userinfo, refresh, a new sign-in.
    # The access token first: a refused refresh would itself revoke the grant.
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    for node in NODE_NAMES:
        status = requests.get(cluster.node_url(node) + "/userinfo", headers=bearer,
                              timeout=TIMEOUT).status_code  # fmt: skip
        assert status == 401, node
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refused = requests.post(cluster.node_url(others[0]) + "/token", data=data,
                            auth=request.basic, timeout=TIMEOUT)  # fmt: skip
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    silent = authorize(agent, request, prompt="none")
    assert silent.status_code == 302, agent.describe()
    answer = query_of(urljoin(cluster.url, silent.headers["Location"]))
    assert answer["error"] == "access_denied"
    assert answer["state"] == request.state
    assert "code" not in answer
