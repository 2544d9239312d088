"""Graceful shutdown (docs/operations.md, "Shutdown"): SIGTERM to ``idp serve --production``
while password sign-ins are in flight. Every one of them completes with a correct answer (a
session and the redirect), the server exits with status 0, and afterwards nothing accepts
connections on its port.

The sign-ins are held in flight by the test, not by slowness: the server runs with
``idp.request_gate`` on, each sign-in stops inside the application until the test opens its gate,
and the test opens the gates only once the server has started shutting down. Nothing here depends
on how fast the machine is: every wait is for an event (a file the server writes, a log line it
prints), bounded only by a generous deadline that fails the test if the event never comes.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from idp.serving import SERVERS
from tests.support.events import EVENT_DEADLINE, wait_for
from tests.support.gates import RequestGates
from tests.support.http_flows import Visitor
from tests.support.live import LiveIdp, start_live_idp

#: Sign-ins held at once: at most the threads of one worker (idp.serving.production_options), so
#: every one reaches its gate even if the server hands them all to the same worker.
IN_FLIGHT = 4
PASSWORD = "held in flight on purpose"
CHEAP_ARGON2 = {"IDP_ARGON2_MEMORY_KIB": "1024", "IDP_ARGON2_TIME_COST": "1"}


@pytest.fixture(params=SERVERS)
def gated_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveIdp, RequestGates]]:
    """Each WSGI server ``idp serve --production --server`` offers, with the request gate on."""
    directory = tmp_path_factory.mktemp("shutdown")
    gates = RequestGates.under(directory)
    env = {**CHEAP_ARGON2, **gates.env(), "IDP_PASSKEY_PROMPT": "false"}
    with start_live_idp(
        directory, production=True, server=request.param, env=env, separate_stderr=True
    ) as idp:
        yield idp, gates


def _log_lines(idp: LiveIdp) -> list[dict[str, Any]]:
    assert idp.stderr_path is not None
    lines = []
    for line in idp.stderr_path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def _shutdown_under_way(idp: LiveIdp, worker_pids: set[int]) -> Callable[[], bool]:
    """What each server prints once SIGTERM has reached the part that drains the requests:
    granian's workers log "Stopping worker-N" themselves; gunicorn's arbiter logs "Handling
    signal: term" and then signals its workers (its workers log nothing until they exit, which
    they do only after their requests finished)."""

    def seen() -> bool:
        lines = _log_lines(idp)
        if idp.server == "gunicorn":
            return any(line.get("message") == "Handling signal: term" for line in lines)
        stopping = {line.get("pid") for line in lines
                    if str(line.get("message", "")).startswith("Stopping worker")}  # fmt: skip
        return worker_pids <= stopping

    return seen


def _described(answer: requests.Response | BaseException | None) -> str:
    if isinstance(answer, requests.Response):
        page = answer.text.partition("<main")[2] or answer.text  # past the head, to the message
        words = " ".join(re.sub(r"<[^>]+>", " ", page).split())
        return f"{answer.status_code} {answer.headers.get('Location', '')} {words[:240]!r}"
    return repr(answer)


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def test_sigterm_lets_every_request_in_flight_finish_then_exits_cleanly(
    gated_node: tuple[LiveIdp, RequestGates],
) -> None:
    node, gates = gated_node
    email = "held@example.com"
    node.create_user(email, PASSWORD)
    visitors = [Visitor(node.url) for _ in range(IN_FLIGHT)]
    forms = [
        {"csrf_token": v.csrf_field("/login"), "email": email, "password": PASSWORD}
        for v in visitors
    ]
    answers: list[requests.Response | BaseException | None] = [None] * IN_FLIGHT
    names = [f"sign-in-{index}" for index in range(IN_FLIGHT)]

    def sign_in(index: int) -> None:
        try:
            answers[index] = visitors[index].post(
                "/login", data=forms[index], headers=gates.header(names[index])
            )
        except BaseException as error:  # recorded, asserted below
            answers[index] = error

    threads = [threading.Thread(target=sign_in, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    try:
        worker_pids = gates.wait_until_held(*names)
    except AssertionError as never_held:
        # What the sign-ins that never reached their gate got instead, and what the server
        # said: a failure here names its cause rather than a deadline.
        seen = [_described(answer) for answer in answers]
        raise AssertionError(f"{never_held}; answers so far: {seen}; {node.log_tail()}") from None

    process = node.process
    assert process is not None
    process.send_signal(signal.SIGTERM)  # the server's main process, as an orchestrator does
    wait_for(_shutdown_under_way(node, worker_pids), f"{node.server} shutting down")
    assert process.poll() is None, "the server exited with requests in flight"
    assert answers == [None] * IN_FLIGHT, f"a sign-in finished before its gate opened: {answers}"
    gates.open(*names)
    for thread in threads:
        thread.join(timeout=EVENT_DEADLINE)

    # Every request in flight got its full, correct answer after the signal.
    for index, answer in enumerate(answers):
        assert isinstance(answer, requests.Response), f"sign-in {index}: {answer!r}"
        assert answer.status_code == 302, (answer.status_code, answer.text[:300])
        assert answer.headers["Location"].endswith("/account")
        assert "idp_session" in answer.cookies
    # ... and the server then stopped by itself, cleanly (the browsers leave: gunicorn lets an
    # idle kept-alive connection linger a little before its workers exit).
    for visitor in visitors:
        visitor.close()
    assert process.wait(timeout=EVENT_DEADLINE) == 0, node.log_tail()
    assert _refused(node.port)
    with pytest.raises(requests.ConnectionError):
        requests.get(node.url + "/healthz", timeout=5)
