"""Graceful shutdown (docs/operations.md, "Shutdown"): SIGTERM to ``idp serve --production``
while password sign-ins are in flight. Every one of them completes with a correct answer (a
session and the redirect), the server exits with status 0, and afterwards nothing accepts
connections on its port.

The requests are slow for real: Argon2id with 64 MiB and 24 passes makes each password check take
several seconds, so they are still running when the signal arrives (the test checks that from the
in-progress gauge and from the completion times, or it would prove nothing).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from idp.serving import SERVERS
from tests.support.http_flows import Visitor
from tests.support.live import LiveIdp, start_live_idp

# One slow sign-in per CPU: more would leave the two cores no time to answer the scrapes that
# tell when every one is in flight, and one could finish before the last had started.
IN_FLIGHT = 2
PASSWORD = "slow to check on purpose"
METRICS_TOKEN = "shutdown-scrape-" + "t" * 40
COSTLY_ARGON2 = {"IDP_ARGON2_MEMORY_KIB": str(64 * 1024), "IDP_ARGON2_TIME_COST": "24"}


@pytest.fixture(params=SERVERS)
def slow_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """Each WSGI server ``idp serve --production --server`` offers (the default among them)."""
    env = {**COSTLY_ARGON2, "IDP_METRICS_TOKEN": METRICS_TOKEN, "IDP_PASSKEY_PROMPT": "false"}
    with start_live_idp(
        tmp_path_factory.mktemp("shutdown"),
        production=True,
        server=request.param,
        env=env,
        separate_stderr=True,
    ) as idp:
        yield idp


def _in_progress(idp: LiveIdp) -> float:
    scrape = requests.get(
        idp.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )
    for line in scrape.text.splitlines():
        if line.startswith("idp_http_requests_in_progress "):
            return float(line.split()[-1]) - 1  # this scrape is in progress too
    raise AssertionError("no idp_http_requests_in_progress in the scrape")


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def test_sigterm_lets_every_request_in_flight_finish_then_exits_cleanly(
    slow_node: LiveIdp,
) -> None:
    email = "slow@example.com"
    slow_node.create_user(email, PASSWORD)
    visitors = [Visitor(slow_node.url) for _ in range(IN_FLIGHT)]
    forms = [
        {"csrf_token": v.csrf_field("/login"), "email": email, "password": PASSWORD}
        for v in visitors
    ]
    answers: list[requests.Response | BaseException | None] = [None] * IN_FLIGHT
    finished_at = [0.0] * IN_FLIGHT

    def sign_in(index: int) -> None:
        try:
            answers[index] = visitors[index].post("/login", data=forms[index])
        except BaseException as error:  # recorded, asserted below
            answers[index] = error
        finished_at[index] = time.monotonic()

    threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while _in_progress(slow_node) < IN_FLIGHT:
        assert time.monotonic() < deadline, "the sign-ins never were in flight together"
        assert not any(answers), f"a sign-in finished before the signal: {answers}"
        time.sleep(0.05)

    process = slow_node.process
    assert process is not None
    signalled_at = time.monotonic()
    process.send_signal(signal.SIGTERM)  # the server's main process, as an orchestrator does
    for thread in threads:
        thread.join(timeout=60)

    # Every request in flight got its full, correct answer after the signal.
    for index, answer in enumerate(answers):
        assert isinstance(answer, requests.Response), f"sign-in {index}: {answer!r}"
        assert answer.status_code == 302, (answer.status_code, answer.text[:300])
        assert answer.headers["Location"].endswith("/account")
        assert "idp_session" in answer.cookies
        assert finished_at[index] > signalled_at
    # ... and the server then stopped by itself, cleanly.
    assert process.wait(timeout=60) == 0, slow_node.log_tail()
    assert _refused(slow_node.port)
    with pytest.raises(requests.ConnectionError):
        requests.get(slow_node.url + "/healthz", timeout=5)
    for visitor in visitors:
        visitor.close()
