"""Back-channel logout across nodes (docs/integrating.md, "Back-channel logout"): a session
ended on one node is announced once, not once per node, even when every node runs the retry of
its delivery at the same moment (the outbox row is claimed once: idp.services.outbox)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update

from idp.extensions import db
from idp.models import Client, OutboxMessage
from idp.models.base import utcnow
from tests.multinode.cluster import (
    NODE_NAMES,
    Authorization,
    Cluster,
    UserAgent,
    authorize,
    code_of,
    exchange,
    login_page,
    password_step,
)
from tests.support.events import wait_for
from tests.support.logout_receiver import logout_receiver, verify_logout_token

pytestmark = pytest.mark.multinode

PASSWORD = "one logout, one announcement"


def test_a_session_ended_on_one_node_is_announced_once(cluster: Cluster, agent: UserAgent) -> None:
    email, sub = cluster.new_user(PASSWORD)
    client = cluster.new_client()
    with logout_receiver() as receiver:
        receiver.answers["/rp"] = (503, "")  # down at first: the retry is what the nodes race
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
        ended = agent.get("/logout", params={"id_token_hint": token.json()["id_token"]})
        assert ended.status_code == 200, agent.describe()

        def queued() -> list[OutboxMessage]:
            with cluster.setup_app.app_context():
                found = list(
                    db.session.scalars(
                        select(OutboxMessage).where(OutboxMessage.recipient == client["client_id"])
                    )
                )
                db.session.expunge_all()
                return found

        wait_for(lambda: any(r.last_failure_at is not None for r in queued()), "a failed try")
        [failed] = queued()
        assert failed.sent_at is None
        receiver.answers.pop("/rp")
        tried = len(receiver.deliveries)
        with cluster.setup_app.app_context():
            db.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == failed.id)
                .values(next_attempt_at=utcnow())
            )
            db.session.commit()

        # Every node's prune job retries due deliveries; all three at once.
        with ThreadPoolExecutor(len(NODE_NAMES)) as pool:
            runs = list(pool.map(lambda name: cluster.nodes[name].run("prune"), NODE_NAMES))
        assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]

        assert len(receiver.deliveries) == tried + 1
        [delivered] = queued()
        assert delivered.sent_at is not None
        jwks = cluster.jwks(NODE_NAMES[0]).as_dict()
        claims = verify_logout_token(
            receiver.deliveries[-1].token, jwks, issuer=cluster.url,
            client_id=client["client_id"], alg="RS256",
        )  # fmt: skip
        assert claims["sub"] == sub
