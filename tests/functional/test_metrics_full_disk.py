"""The workers' metrics on a full file system (docs/operations.md, "SQLite: a full disk, or a
read-only file"; docs/security.md, "Faults and degraded dependencies").

Each worker counts in memory-mapped files (prometheus_client's multiprocess mode) under
``PROMETHEUS_MULTIPROC_DIR``, a directory under ``/tmp`` by default: on a host with one disk, the
same file system as an SQLite database. A page of a mapped file that was never written has no
block on disk yet, and the kernel answers a write into it on a full file system with SIGBUS,
which kills the process: no 503, every request in flight cut, and the worker the server starts
instead dies at its first count. The test counts in a process of its own (a SIGBUS would end the
test run) on a small tmpfs it mounts and fills (the tests run as root), unmounted afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests

from idp.metrics import MULTIPROC_ENV
from tests.functional.test_outages import fill, small_tmpfs
from tests.support.http_flows import RelyingParty, Visitor
from tests.support.live import children, start_live_idp

REPOSITORY = Path(__file__).resolve().parents[2]

#: The counting process: counts, fills the file system, counts what no file has room for yet,
#: frees the space and counts again; prints the scrape's text.
COUNTING = """
import sys
from pathlib import Path

from idp import metrics
from tests.functional.test_outages import fill

metrics.request_finished("before", "GET", 200, 0.01)
filler = fill(Path(sys.argv[1]))
for number in range(300):  # new label values: new entries, and files that must grow
    metrics.request_finished(f"full_{number}", "GET", 503, 0.01)
    metrics.token_request("refresh_token", 503, "temporarily_unavailable")
    metrics.lockout(f"factor_{number}")
filler.unlink()
metrics.request_finished("after", "GET", 200, 0.01)
sys.stdout.write(metrics.exposition()[0].decode())
"""


#: A worker started on a full file system (the server replaced one that exited): it has no file
#: yet. Counts, scrapes while full, frees the space and counts again; prints how many exit
#: handlers it registered, the files the directory held while full, and the scrape's text.
STARTING_FULL = """
import atexit
import os
import sys
from pathlib import Path

from idp import metrics
from tests.functional.test_outages import fill

filler = fill(Path(sys.argv[1]))
handlers = atexit._ncallbacks()
for number in range(50):
    metrics.request_started()
    metrics.request_finished("full", "GET", 503, 0.01)
    metrics.request_ended()
metrics.exposition()  # a scrape while full
files = sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
filler.unlink()
metrics.request_finished("after", "GET", 200, 0.01)
print(atexit._ncallbacks() - handlers)
print(files)
sys.stdout.write(metrics.exposition()[0].decode())
"""


def counting_on_a_full_disk(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run in a process of its own whose metrics directory is on a small tmpfs, which
    it is given to fill."""
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        directory = disk / "metrics"
        directory.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
        return subprocess.run(
            [sys.executable, "-c", script, str(disk)],
            env=env | {MULTIPROC_ENV: str(directory)},
            cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip


def test_counting_on_a_full_file_system_drops_counts_and_never_kills_the_worker(
    tmp_path: Path,
) -> None:
    counting = counting_on_a_full_disk(tmp_path, COUNTING)
    # Alive to the end (a SIGBUS is -7), and nothing raised into the request that counted.
    assert counting.returncode == 0, (counting.returncode, counting.stderr[-3000:])
    # The counts no file had room for were dropped, and the worker said so (once).
    assert counting.stderr.count("metrics: a count was dropped") == 1, counting.stderr[-3000:]
    scrape = counting.stdout
    assert 'idp_http_requests_total{endpoint="before",method="GET",status="200"} 1.0' in scrape
    # Once there is room again, counting works again.
    assert 'idp_http_requests_total{endpoint="after",method="GET",status="200"} 1.0' in scrape


def test_a_worker_started_on_a_full_file_system_counts_once_there_is_room(
    tmp_path: Path,
) -> None:
    counting = counting_on_a_full_disk(tmp_path, STARTING_FULL)
    assert counting.returncode == 0, (counting.returncode, counting.stderr[-3000:])
    assert counting.stderr.count("metrics: a count was dropped") == 1, counting.stderr[-3000:]
    registered, files, scrape = counting.stdout.split("\n", 2)
    # One exit handler once the metrics could be made, not one per request that tried.
    assert registered == "1"
    # No file left empty by a failed allocation: the scrape reads every file of the directory.
    assert files == "[]"
    assert 'idp_http_requests_total{endpoint="after",method="GET",status="200"} 1.0' in scrape


METRICS_TOKEN = "metrics-token-for-a-full-disk-0123456789"


def test_a_node_whose_one_disk_fills_stays_alive_and_answers(tmp_path: Path) -> None:
    """The whole node on one small disk: the SQLite database, the metrics directory and the log.
    Filled up, the node answers every request (a 503 for what must write, and readiness) with
    the workers it had; given room again, it is ready and the token refreshes."""
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        (disk / "metrics").mkdir()
        env = {"WEB_CONCURRENCY": "2", "IDP_PASSKEY_PROMPT": "false",
               "IDP_METRICS_TOKEN": METRICS_TOKEN,
               MULTIPROC_ENV: str(disk / "metrics")}  # fmt: skip
        with start_live_idp(disk, production=True, env=env) as idp:
            assert idp.process is not None
            idp.create_user("full@example.com", "a disk that fills up")
            registered = idp.create_client(name="RP", redirect_uris=["https://rp.example/cb"],
                                           first_party=True)  # fmt: skip
            rp = RelyingParty(idp.url, registered["client_id"], registered["client_secret"],
                              "https://rp.example/cb")  # fmt: skip
            browser = Visitor(idp.url)
            browser.sign_in_with_password("full@example.com", "a disk that fills up")
            authorization = browser.authorize(registered["client_id"], "https://rp.example/cb")
            tokens = rp.exchange(authorization.location, authorization)
            workers = children(idp.process.pid)

            filler = fill(disk)
            bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
            scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
            for _ in range(20):  # new label values: entries the metrics files have no room for
                assert requests.get(idp.url + "/readyz", timeout=30).status_code == 503
                assert requests.get(idp.url + "/healthz", timeout=30).status_code == 200
                assert requests.get(idp.url + "/userinfo", headers=bearer,
                                    timeout=30).status_code == 200  # fmt: skip
                for path in ("/jwks", "/login", "/.well-known/openid-configuration"):
                    assert requests.get(idp.url + path, timeout=30).status_code == 200
                assert requests.get(idp.url + "/no-such-page", timeout=30).status_code == 404
                assert requests.get(idp.url + "/metrics", headers=scraper,
                                    timeout=30).status_code == 200  # fmt: skip
                refresh = rp.post("/token", {"grant_type": "refresh_token",
                                             "refresh_token": tokens["refresh_token"]})  # fmt: skip
                # A write may still fit in SQLite's write-ahead log, or answer the calm 503.
                assert refresh.status_code in (200, 503), refresh.text
                if refresh.status_code == 200:
                    tokens = refresh.json()
                else:
                    assert refresh.json()["error"] == "temporarily_unavailable"
            assert children(idp.process.pid) == workers  # none died, none replaced

            filler.unlink()
            assert requests.get(idp.url + "/readyz", timeout=30).status_code == 200
            assert "refresh_token" in rp.refresh(tokens["refresh_token"])
