"""Three stateless idp nodes behind a load balancer (docs/operations.md, "The shape of a
deployment").

Every node shares only PostgreSQL, Redis, the issuer and the secret key. haproxy balances
round-robin and names the node that answered in ``X-Served-By``; each flow asserts that its
consecutive requests landed on more than one node, so a flow only passes when no step depends on
something a previous step left in one node's memory.
"""

from __future__ import annotations

import html
import itertools
import re
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import pyotp
import pytest
import requests
from sqlalchemy import select

from idp.extensions import db
from idp.models import Client, OutboxMessage
from idp.services import sign_in as messages
from idp.services.rate_limits import FREE_FAILURES
from tests.multinode.cluster import (
    KEY_CACHE_TTL,
    NODE_NAMES,
    POST_LOGOUT_URI,
    TIMEOUT,
    Authorization,
    Cluster,
    UserAgent,
    add_passkey,
    authorize,
    code_of,
    csrf_field,
    exchange,
    jwt_header,
    login_page,
    passkey_options,
    passkey_verify,
    password_step,
    refresh,
    userinfo,
    verified_id_token,
)
from tests.support.authenticator import SoftAuthenticator
from tests.support.flow import shown_address
from tests.support.logout_receiver import logout_receiver, verify_logout_token

pytestmark = pytest.mark.multinode

PASSWORD = "three nodes one database"
TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def assert_spread(served_by: list[str], what: str, *, every_step: bool = True) -> None:
    """Every response of a flow came through haproxy from a named node, and no two consecutive
    requests landed on the same node (round-robin, one request at a time). With a node down, a
    request redispatched from it may land where the previous one did: ``every_step=False`` then
    asks only for more than one node."""
    assert set(served_by) <= set(NODE_NAMES), f"{what}: answered by {served_by}"
    assert len(set(served_by)) > 1, f"{what}: every request landed on {served_by}"
    if every_step:
        repeats = [i for i, (a, b) in enumerate(itertools.pairwise(served_by)) if a == b]
        assert not repeats, f"{what}: consecutive requests on one node: {served_by}"


def signed_in_with_password(agent: UserAgent, email: str) -> None:
    csrf, _ = login_page(agent, "/login")
    response = password_step(agent, email, PASSWORD, csrf=csrf)
    assert response.status_code == 302, agent.describe()


def user_with_passkey(cluster: Cluster) -> tuple[str, SoftAuthenticator]:
    email, _ = cluster.new_user(PASSWORD)
    authenticator = SoftAuthenticator()
    with UserAgent(cluster) as setup:
        signed_in_with_password(setup, email)
        add_passkey(setup, authenticator)
    return email, authenticator


def passkey_sign_in(
    agent: UserAgent, authenticator: SoftAuthenticator, request: Authorization
) -> dict[str, Any]:
    """authorize, login page, options, assertion (the verify answers with the callback), token."""
    response = authorize(agent, request)  # the sign-in page
    csrf, pending = login_page(agent, response)
    assert pending, "the authorization request was not saved for the login page"
    ceremony = passkey_options(agent, csrf)
    destination = passkey_verify(agent, authenticator, ceremony, csrf=csrf, pending=pending)
    code = code_of(agent, request, destination)
    token = exchange(agent, request, code)
    assert token.status_code == 200, f"{token.text}\n{agent.describe()}"
    tokens: dict[str, Any] = token.json()
    return tokens


def enrol_totp(agent: UserAgent) -> str:
    """Set up an authenticator app, confirmed with the previous step's code: the current step
    stays unspent for the sign-in (an accepted step is never accepted again, RFC 6238 5.2)."""
    for _ in range(2):  # a second try only if a step boundary passed between code and check
        page = agent.get("/account/totp")
        assert page.status_code == 200, agent.describe()
        secret = TOTP_SECRET.search(page.text)
        assert secret, "no TOTP secret on the enrolment page"
        previous = pyotp.TOTP(secret.group(1)).at(time.time() - 30)
        confirmed = agent.post("/account/totp", data={"csrf_token": csrf_field(page.text),
                                                      "code": previous})  # fmt: skip
        if confirmed.status_code == 200 and "backup" in confirmed.text.lower():
            return secret.group(1)
    raise AssertionError(f"TOTP enrolment refused\n{agent.describe()}")


# == every flow through the balancer ==============================================================
def test_passkey_sign_in_through_the_code_flow_spreads_over_nodes(
    cluster: Cluster, agent: UserAgent
) -> None:
    _email, authenticator = user_with_passkey(cluster)
    client = cluster.new_client()
    request = Authorization(client)
    start = agent.mark()
    tokens = passkey_sign_in(agent, authenticator, request)
    assert_spread(agent.nodes_since(start), "passkey sign-in")
    for node in NODE_NAMES:
        claims = verified_id_token(cluster, node, tokens["id_token"], request.nonce)
        assert "mfa" in claims["amr"]
    info = userinfo(agent, tokens["access_token"])
    assert info.status_code == 200, agent.describe()


def test_password_and_totp_sign_in_spreads_over_nodes(cluster: Cluster, agent: UserAgent) -> None:
    email, _ = cluster.new_user(PASSWORD)
    with UserAgent(cluster) as setup:
        signed_in_with_password(setup, email)
        secret = enrol_totp(setup)

    request = Authorization(cluster.new_client())
    start = agent.mark()
    response = authorize(agent, request)
    csrf, pending = login_page(agent, response)
    after_password = password_step(agent, email, PASSWORD, csrf=csrf, pending=pending)
    assert shown_address(after_password) == "/login/second-step", agent.describe()
    step = agent.get("/login/second-step")
    assert step.status_code == 200, agent.describe()
    # The partial sign-in lives in the database: the node that checks the code need not be the
    # node that checked the password.
    second = agent.post("/login/second-step", data={"csrf_token": csrf_field(step.text),
                                                    "method": "totp",
                                                    "code": pyotp.TOTP(secret).now()})  # fmt: skip
    code = code_of(agent, request, second)
    token = exchange(agent, request, code)
    assert token.status_code == 200, agent.describe()
    assert_spread(agent.nodes_since(start), "password + TOTP sign-in")
    claims = verified_id_token(cluster, NODE_NAMES[0], token.json()["id_token"], request.nonce)
    assert set(claims["amr"]) >= {"pwd", "otp", "mfa"}


def test_refresh_rotates_on_every_node_and_a_replay_elsewhere_revokes_the_family(
    cluster: Cluster, agent: UserAgent
) -> None:
    _email, authenticator = user_with_passkey(cluster)
    request = Authorization(cluster.new_client())
    tokens = passkey_sign_in(agent, authenticator, request)
    assert userinfo(agent, tokens["access_token"]).status_code == 200

    start = agent.mark()
    history = [tokens]
    for _ in range(len(NODE_NAMES)):
        rotated = refresh(agent, request, history[-1]["refresh_token"])
        assert rotated.status_code == 200, agent.describe()
        history.append(rotated.json())
        assert history[-1]["refresh_token"] != history[-2]["refresh_token"]
        assert userinfo(agent, history[-1]["access_token"]).status_code == 200
    grants = [node for node, line in zip(agent.nodes_since(start), agent.trail[start:],
                                         strict=True) if "/token" in line]  # fmt: skip
    assert set(grants) == set(NODE_NAMES), f"refresh grants served by {grants}"

    # Replay the first refresh token on a node that did not redeem it (RFC 9700 4.14.2): the
    # family is revoked everywhere, the newest tokens included.
    first_redeemer = grants[0]
    other = next(node for node in NODE_NAMES if node != first_redeemer)
    data = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    replay = requests.post(cluster.node_url(other) + "/token", data=data, auth=request.basic,
                           timeout=TIMEOUT)  # fmt: skip
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    newest = history[-1]
    for node in NODE_NAMES:
        bearer = {"Authorization": f"Bearer {newest['access_token']}"}
        assert requests.get(cluster.node_url(node) + "/userinfo", headers=bearer,
                            timeout=TIMEOUT).status_code == 401  # fmt: skip
    again = refresh(agent, request, newest["refresh_token"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_rp_initiated_logout_ends_the_session_on_every_node(
    cluster: Cluster, agent: UserAgent
) -> None:
    _email, authenticator = user_with_passkey(cluster)
    request = Authorization(cluster.new_client())
    tokens = passkey_sign_in(agent, authenticator, request)
    # The session works wherever the next request lands.
    for _ in NODE_NAMES:
        assert agent.get("/account").status_code == 200, agent.describe()

    start = agent.mark()
    response = agent.get("/logout", params={"id_token_hint": tokens["id_token"],
                                            "post_logout_redirect_uri": POST_LOGOUT_URI,
                                            "state": "bye"})  # fmt: skip
    assert response.status_code == 302, agent.describe()
    assert response.headers["Location"] == f"{POST_LOGOUT_URI}?state=bye"
    # Ended server-side: no node accepts the session or the session's access token.
    for _ in NODE_NAMES:
        silent = authorize(agent, Authorization(request.client), prompt="none")
        assert "error=login_required" in silent.headers["Location"], agent.describe()
        assert userinfo(agent, tokens["access_token"]).status_code == 401
    assert_spread(agent.nodes_since(start), "logout")


def test_an_admin_login_link_is_issued_opened_and_spent_on_three_nodes(
    cluster: Cluster, agent: UserAgent
) -> None:
    email, _ = cluster.new_user(PASSWORD)
    issuing, opening, spending = NODE_NAMES
    link = cluster.nodes[issuing].cli("login-link", email, "--json")["url"]
    assert link.startswith(cluster.url + "/login/link/")
    path = link[len(cluster.url) :]

    session = agent.session
    page = session.get(cluster.node_url(opening) + path, timeout=TIMEOUT)
    assert page.status_code == 200
    assert "Sign in as" in page.text
    spent = session.post(cluster.node_url(spending) + path,
                         data={"csrf_token": csrf_field(page.text)},
                         headers={"Origin": cluster.url}, allow_redirects=False,
                         timeout=TIMEOUT)  # fmt: skip
    assert spent.status_code == 302
    assert spent.headers["Location"] == "/account/recover"

    # The restricted session (created on the third node) must add a passkey first, wherever
    # its next requests land.
    start = agent.mark()
    assert agent.get("/account").headers["Location"] == "/account/recover"
    authenticator = SoftAuthenticator()
    add_passkey(agent, authenticator, page="/account/recover")
    assert agent.get("/account").status_code == 200, agent.describe()
    assert_spread(agent.nodes_since(start), "forced passkey registration")
    # Spent once, for every node.
    for node in NODE_NAMES:
        assert requests.get(cluster.node_url(node) + path, timeout=TIMEOUT).status_code == 400
    # And the new passkey signs in to a relying party.
    with UserAgent(cluster) as fresh:
        passkey_sign_in(fresh, authenticator, Authorization(cluster.new_client()))


# == signing keys =================================================================================
def bearer_status(cluster: Cluster, node: str, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(cluster.node_url(node) + "/userinfo", headers=headers,
                        timeout=TIMEOUT).status_code  # fmt: skip


def test_a_key_rotated_on_one_node_is_used_and_published_by_all(
    cluster: Cluster, agent: UserAgent
) -> None:
    _email, authenticator = user_with_passkey(cluster)
    first = Authorization(cluster.new_client())
    before = passkey_sign_in(agent, authenticator, first)
    old_kid = jwt_header(before["id_token"])["kid"]

    id_tokens: list[tuple[str, str]] = []

    def sign_in_and_use_everywhere() -> tuple[dict[str, Any], str]:
        """A sign-in (the session's prompt-free authorization and the code exchange), its access
        token then presented to every node, twice (gunicorn runs two workers, each with its own
        key cache). Which key signed the token does not matter: every node must honour it."""
        request = Authorization(first.client)
        code = code_of(agent, request, authorize(agent, request))
        token = exchange(agent, request, code)
        assert token.status_code == 200, agent.describe()
        issued, signer = token.json(), agent.served_by[-1]
        id_tokens.append((issued["id_token"], request.nonce))
        kid = jwt_header(issued["access_token"])["kid"]
        for node in [*NODE_NAMES, *NODE_NAMES]:
            status = bearer_status(cluster, node, issued["access_token"])
            assert status == 200, f"{node} refused an access token of {signer} signed by {kid}"
        return issued, signer

    # Rotate while the nodes serve: sign-ins go on while `idp keys rotate` runs, so that right
    # after the commit some workers sign with the new key while others have not reloaded yet.
    with ThreadPoolExecutor(1) as pool:
        rotation = pool.submit(cluster.nodes[NODE_NAMES[0]].cli, "keys", "rotate", "--json")
        while not wait([rotation], timeout=0).done:
            sign_in_and_use_everywhere()
        rotated = rotation.result()
    rotated_at = time.monotonic()  # the commit came before: a generous start of the window
    active = {k["alg"]: k["kid"] for k in rotated if k["active"]}
    new_kid = active["RS256"]
    assert new_kid != old_kid

    # Used by every node: sign-ins for the whole window, and until each node has issued an ID
    # token with the new key. A new key is published for two cache windows before it signs
    # (idp.services.signing_keys ``publish_first``), and a worker sees that moment within a
    # third: the old key signs until then, and never after.
    window = 3 * KEY_CACHE_TTL
    issued_by: dict[str, str] = {}
    published_everywhere = False
    while set(issued_by) != set(NODE_NAMES) or time.monotonic() - rotated_at < window:
        started = time.monotonic() - rotated_at
        assert started < window + 20, f"only {sorted(issued_by)} signed with {new_kid}"
        issued, signer = sign_in_and_use_everywhere()
        if jwt_header(issued["id_token"])["kid"] != new_kid:
            assert started < window, f"{signer} signs with the old key after {started:.1f} s"
            continue
        if not published_everywhere:
            # The first token the new key signed: every worker of every node publishes it
            # already (a relying party that refetches the JWKS from any node finds it).
            for node in NODE_NAMES:
                for _ in range(6):
                    assert new_kid in cluster.published_kids(node), f"{node} lacks {new_kid}"
            published_everywhere = True
        access_header = jwt_header(issued["access_token"])
        if access_header["kid"] != active[access_header["alg"]]:
            # The access token is minted before the ID token is signed: a worker whose cache
            # expired between the two signed this answer with both keys (every node honoured the
            # old one above). Only within the window.
            assert started < window, f"{signer} mints with the old key after {started:.1f} s"
            continue
        issued_by[signer] = issued["id_token"]

    # Published by every node: key_cache_ttl has passed, so by every worker of every node.
    for node in NODE_NAMES:
        for _ in range(6):
            assert {old_kid, new_kid} <= cluster.published_kids(node), node
        # Every ID token of the rotation, old key or new, verifies against every node's JWKS.
        jwks = cluster.jwks(node)
        for id_token, nonce in id_tokens:
            verified_id_token(cluster, node, id_token, nonce, jwks)

    # Tokens signed by the old key still verify against every node's JWKS, and the old access
    # token is still honoured everywhere.
    for node in NODE_NAMES:
        verified_id_token(cluster, node, before["id_token"], first.nonce)
        assert bearer_status(cluster, node, before["access_token"]) == 200


# == rate limits ==================================================================================
@pytest.mark.parametrize("spread", [True, False], ids=["three-nodes", "one-node"])
def test_failed_passwords_on_every_node_add_up_to_one_count(
    cluster: Cluster, agent: UserAgent, spread: bool
) -> None:
    """failures are counted per account and factor, shared across nodes. The delay
    starts after the same number of failures whether they hit three nodes or one."""
    email, _ = cluster.new_user(PASSWORD)
    csrf, _ = login_page(agent, "/login")
    target = "/login" if spread else cluster.node_url(NODE_NAMES[1]) + "/login"
    start = agent.mark()
    for _ in range(FREE_FAILURES):
        wrong = agent.post(target, data={"csrf_token": csrf, "email": email,
                                         "password": "not the password"})  # fmt: skip
        assert wrong.status_code == 401, agent.describe()
        assert messages.GENERIC_FAILURE in html.unescape(wrong.text)
    failed_on = agent.nodes_since(start)
    if spread:
        assert set(failed_on) == set(NODE_NAMES), failed_on
    else:
        assert set(failed_on) == {"?"}, failed_on  # straight to the node, haproxy not involved
    assert cluster.failures(f"pwd:{cluster.email_key(email)}") == FREE_FAILURES

    # The next attempt, even with the right password and on whichever node, waits.
    right = password_step(agent, email, PASSWORD, csrf=csrf)
    assert right.status_code == 401, agent.describe()
    assert messages.THROTTLED in html.unescape(right.text)
    assert cluster.failures(f"pwd:{cluster.email_key(email)}") == FREE_FAILURES + 1


# == a node dies ==================================================================================
def test_killing_a_node_mid_flow_loses_no_session_and_no_data(
    cluster: Cluster, agent: UserAgent
) -> None:
    _email, authenticator = user_with_passkey(cluster)
    client = cluster.new_client()
    # A signed-in browser with tokens...
    with UserAgent(cluster) as signed_in:
        tokens = passkey_sign_in(signed_in, authenticator, Authorization(client))
        # ... and a sign-in between steps: the authorization request is pending and the WebAuthn
        # challenge issued. The node that issued the challenge dies before it is answered.
        pending_request = Authorization(client)
        response = authorize(agent, pending_request)
        csrf, pending = login_page(agent, response)
        ceremony = passkey_options(agent, csrf)
        victim = agent.served_by[-1]
        survivors = set(NODE_NAMES) - {victim}

        cluster.kill(victim)
        try:
            # No wait for the health checks: a request haproxy still sends to the dead node is
            # refused there and redispatched.
            start = agent.mark()
            destination = passkey_verify(agent, authenticator, ceremony, csrf=csrf,
                                         pending=pending)  # fmt: skip
            code = code_of(agent, pending_request, destination)
            token = exchange(agent, pending_request, code)
            assert token.status_code == 200, agent.describe()
            verified_id_token(cluster, sorted(survivors)[0], token.json()["id_token"],
                              pending_request.nonce)  # fmt: skip
            assert set(agent.nodes_since(start)) <= survivors, agent.describe()
            assert_spread(agent.nodes_since(start), "the pending sign-in after the kill",
                          every_step=False)  # fmt: skip

            cluster.balancer.wait_for_states({victim: "DOWN"})
            assert cluster.balancer.server_states() == {
                name: "DOWN" if name == victim else "UP" for name in NODE_NAMES
            }

            # The session from before the kill still signs in to the relying party, and the
            # tokens issued before it still refresh and still answer at userinfo.
            start = signed_in.mark()
            assert signed_in.get("/account").status_code == 200, signed_in.describe()
            silent = Authorization(client)
            code = code_of(signed_in, silent, authorize(signed_in, silent, prompt="none"))
            assert exchange(signed_in, silent, code).status_code == 200, signed_in.describe()
            assert userinfo(signed_in, tokens["access_token"]).status_code == 200
            renewed = refresh(signed_in, Authorization(client), tokens["refresh_token"])
            assert renewed.status_code == 200, signed_in.describe()
            assert set(signed_in.nodes_since(start)) <= survivors, signed_in.describe()
            assert_spread(signed_in.nodes_since(start), "the old session after the kill",
                          every_step=False)  # fmt: skip
        finally:
            cluster.restart(victim)


# -- back-channel logout (docs/integrating.md, "Back-channel logout") --------------------------
LOGOUT_PASSWORD = "one logout, one announcement"


def test_a_session_ended_on_every_node_at_once_is_announced_once(
    cluster: Cluster, agent: UserAgent
) -> None:
    """Back-channel logout across nodes (docs/integrating.md, "Back-channel logout"): one session
    ended on all three nodes at once (a double click, a relying party and the user signing out
    together) is ended by one of them and announced once, not once per node: each node's
    conditional UPDATE of the session row lets exactly one transaction end it
    (idp.services.sessions)."""
    email, sub = cluster.new_user(LOGOUT_PASSWORD)
    client = cluster.new_client()
    with logout_receiver() as receiver:
        with cluster.setup_app.app_context():
            row = db.session.get(Client, client["client_id"])
            assert row is not None
            row.backchannel_logout_uri = receiver.url("/rp")
            db.session.commit()

        request = Authorization(client)
        response = authorize(agent, request)
        csrf, pending = login_page(agent, response)
        signed_in = password_step(agent, email, LOGOUT_PASSWORD, csrf=csrf, pending=pending)
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
