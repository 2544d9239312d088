"""A worker killed in the middle of a write (docs/operations.md, "A worker killed";
docs/security.md, "Faults and degraded dependencies").

A live ``idp serve --production`` with two workers on SQLite. An authenticator app's confirmation
is held at its checkpoint (idp.checkpoints) inside its transaction, the user's row locked: the
worker holds the database's write turn, its ``flock`` on ``<database>-writer``
(idp.sqlite_writers), and SQLite's own write lock. The test kills that worker with SIGKILL (no
handler runs: the kernel's out-of-memory killer, an orchestrator's kill). The kernel releases
both locks with the process: the other worker writes at once (not after the busy timeout's
"database is locked"), the server starts a worker in its place, nothing of the transaction was
committed (the app is not confirmed, and its enrolment is confirmed afterwards) and the
database is intact.
"""

from __future__ import annotations

import html
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pyotp
import requests

from idp.services.totp import CONFIRM_CHECKPOINT
from tests.support.checkpoints import Checkpoints, wait_until
from tests.support.http_flows import CSRF_FIELD, TOTP_SECRET, RelyingParty, Visitor
from tests.support.live import children, start_live_idp

PASSWORD = "a worker killed mid-write"
REDIRECT_URI = "https://rp.example/callback"


def flock_holders(path: Path) -> set[int]:
    """The processes holding a ``flock`` on ``path`` (/proc/locks: the inode is the third part of
    the device field)."""
    inode = os.stat(path).st_ino
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        ours = len(fields) >= 6 and fields[1] == "FLOCK" and fields[2] != "->"
        if ours and int(fields[5].split(":")[2]) == inode:
            holders.add(int(fields[4]))
    return holders


def totp_page(browser: Visitor) -> tuple[str, str]:
    """The enrolment page's secret and form token."""
    page = browser.get("/account/totp")
    secret, csrf = TOTP_SECRET.search(page.text), CSRF_FIELD.search(page.text)
    assert secret is not None, page.status_code
    assert csrf is not None, page.status_code
    return html.unescape(secret.group(1)).replace(" ", ""), html.unescape(csrf.group(1))


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie its parent has yet to reap): the kernel
    closes a process's descriptors before it becomes a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"  # field 3: the state


def answers(url: str) -> bool:
    """Whether the server answers a read (discovery) on a new connection."""
    try:
        return requests.get(f"{url}/.well-known/openid-configuration", timeout=10).ok
    except requests.ConnectionError:
        return False


def test_a_worker_killed_holding_the_write_turn_leaves_nothing_locked_or_half_done(
    tmp_path: Path,
) -> None:
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.open_all(CONFIRM_CHECKPOINT)
    env = checkpoints.env | {"WEB_CONCURRENCY": "2", "IDP_PASSKEY_PROMPT": "false"}
    with start_live_idp(tmp_path, production=True, env=env) as idp:
        assert idp.process is not None
        email = "killed@example.com"
        idp.create_user(email, PASSWORD)
        registered = idp.create_client(name="RP", redirect_uris=[REDIRECT_URI], first_party=True)
        rp = RelyingParty(idp.url, registered["client_id"], registered["client_secret"],
                          REDIRECT_URI)  # fmt: skip
        # The confirmation's answer never comes: the browser must not send it again.
        browser = Visitor(idp.url, resend_dropped=False)
        browser.sign_in_with_password(email, PASSWORD)
        authorization = browser.authorize(registered["client_id"], REDIRECT_URI)
        tokens = rp.exchange(authorization.location, authorization)  # signed in: a code at once
        secret, csrf = totp_page(browser)
        code = pyotp.TOTP(secret).now()
        workers = children(idp.process.pid)
        assert len(workers) == 2

        outcome: dict[str, Any] = {}

        def confirm() -> None:
            try:
                outcome["answer"] = browser.post(
                    "/account/totp", data={"csrf_token": csrf, "code": code}
                )
            except requests.ConnectionError as error:
                outcome["cut"] = error

        with checkpoints.holding(CONFIRM_CHECKPOINT):
            held = threading.Thread(target=confirm)
            held.start()
            wait_until(lambda: checkpoints.arrivals(CONFIRM_CHECKPOINT) == 1, "the confirmation")
            (holder,) = flock_holders(tmp_path / "idp.db-writer")
            assert holder in workers  # the held request's worker has the write turn
            os.kill(holder, signal.SIGKILL)
            held.join(timeout=60)
        assert "cut" in outcome, outcome  # its connection closed with the worker, unanswered
        # Every descriptor of the killed worker closed, its listening socket's too: a connection
        # made before that could still be given to it and reset (once in a run of the suite).
        wait_until(lambda: exited(holder), "the killed worker's exit")
        # The server starts a worker in the killed one's place. A connection made while it did
        # was reset once in a run of the suite: reads, which may be sent again, wait that out,
        # so that the refresh below, which must be sent once (a replay revokes its family,
        # RFC 9700 4.14.2), meets a server that answers.
        wait_until(lambda: len(children(idp.process.pid) - {holder}) == 2, "a new worker")
        wait_until(lambda: answers(idp.url) and answers(idp.url), "answers after the kill")

        # The other workers write: the turn and SQLite's lock went with the killed process.
        refreshed = rp.refresh(tokens["refresh_token"])
        assert "refresh_token" in refreshed

        # Nothing of the killed transaction was committed: the app is not confirmed (nor its
        # step spent, written with it), and the enrolment goes on where it was.
        with sqlite3.connect(f"file:{tmp_path / 'idp.db'}?mode=ro", uri=True) as database:
            assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            confirmed = "SELECT count(*) FROM totp_credentials WHERE confirmed_at IS NOT NULL"
            assert database.execute(confirmed).fetchone() == (0,)
        database.close()
        secret_again, csrf = totp_page(browser)
        assert secret_again == secret
        done = browser.post("/account/totp", data={"csrf_token": csrf,
                                                   "code": pyotp.TOTP(secret).now()})  # fmt: skip
        assert done.status_code == 200, done.text[:500]
