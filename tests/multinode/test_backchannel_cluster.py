"""Back-channel logout across nodes (docs/integrating.md, "Back-channel logout"): one session
ended on all three nodes at once (a double click, a relying party and the user signing out
together) is ended by one of them and announced once, not once per node: each node's conditional
UPDATE of the session row lets exactly one transaction end it (idp.services.sessions)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import select

from idp.extensions import db
from idp.models import Client, OutboxMessage
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
)
from tests.support.logout_receiver import logout_receiver, verify_logout_token

pytestmark = pytest.mark.multinode

PASSWORD = "one logout, one announcement"


def test_a_session_ended_on_every_node_at_once_is_announced_once(
    cluster: Cluster, agent: UserAgent
) -> None:
    email, sub = cluster.new_user(PASSWORD)
    client = cluster.new_client()
    with logout_receiver() as receiver:
        with cluster.setup_app.app_context():
            row = db.session.get(Client, client["client_id"])
            assert row is not None
            row.backchannel_logout_uri = receiver.url("/rp")
            db.session.commit()

        request = Authorization(client)
        response = authorize(agent, request)
        csrf, pending = login_page(agent, response.headers["Location"])
        signed_in = password_step(agent, email, PASSWORD, csrf=csrf, pending=pending)
        token = exchange(agent, request, code_of(agent, request, signed_in))
        assert token.status_code == 200, agent.describe()
        cookie = "; ".join(f"{c.name}={c.value}" for c in agent.session.cookies)
        hint = {"id_token_hint": token.json()["id_token"]}

        def sign_out(node: str) -> int:
            answer = requests.get(
                cluster.node_url(node) + "/logout", params=hint, headers={"Cookie": cookie},
                allow_redirects=False, timeout=TIMEOUT,
            )  # fmt: skip
            return answer.status_code

        with ThreadPoolExecutor(len(NODE_NAMES)) as pool:
            statuses = list(pool.map(sign_out, NODE_NAMES))
        assert statuses == [200, 200, 200]

        receiver.wait_for(1)
        with cluster.setup_app.app_context():
            queued = list(
                db.session.scalars(
                    select(OutboxMessage).where(OutboxMessage.recipient == client["client_id"])
                )
            )
        assert len(queued) == 1
        [delivery] = receiver.deliveries
        jwks = cluster.jwks(NODE_NAMES[0]).as_dict()
        claims = verify_logout_token(
            delivery.token, jwks, issuer=cluster.url, client_id=client["client_id"], alg="RS256"
        )
        assert claims["sub"] == sub
