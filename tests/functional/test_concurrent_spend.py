"""Spend-once secrets under real parallel requests against a live multi-process server.

docs/architecture.md, "Invariants": every secret spent once goes through one atomic consume-once
primitive, and a replay revokes what was issued from it. N parallel redemptions of one code or
refresh token: exactly one wins; the losers' replay then revokes the winner's tokens too. Runs on
SQLite and PostgreSQL.

The refresh token test runs with ``refresh_token_retry_grace = 0``: within the grace window a
second presentation while the successor is unused is a retry of a lost answer, whose parallel
rules tests/functional/test_refresh_retry.py checks (never two live successors).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from tests.support.apps import live_on
from tests.support.browserless import Browser, answer_device_request, sign_in
from tests.support.live import LiveIdp

PARALLEL = 12
REDIRECT_URI = "http://localhost:9/callback"
PASSWORD = "parallel requests all at once"


def _tokens_and_code(live: LiveIdp) -> tuple[dict[str, str], str, str]:
    email = f"{secrets.token_hex(4)}@example.com"
    live.create_user(email, PASSWORD)
    client = live.create_client(name="Parallel RP", redirect_uris=[REDIRECT_URI], first_party=True)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    url = live.url + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": REDIRECT_URI,
        "scope": "openid offline_access", "state": "s", "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
    })  # fmt: skip
    with Browser() as browser:
        callback = sign_in(browser, url, REDIRECT_URI, email, PASSWORD)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    return client, code, verifier


def _post_all(url: str, auth: tuple[str, str], form: dict[str, str]) -> list[requests.Response]:
    def send(_: int) -> requests.Response:
        return requests.post(url, data=form, auth=auth, timeout=30)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(send, range(PARALLEL)))


def _userinfo_status(live: LiveIdp, access_token: str) -> int:
    headers = {"Authorization": f"Bearer {access_token}"}
    return requests.get(live.url + "/userinfo", headers=headers, timeout=10).status_code


def test_parallel_code_redemptions_exactly_one_wins_and_replay_revokes(live: LiveIdp) -> None:
    client, code, verifier = _tokens_and_code(live)
    responses = _post_all(
        live.url + "/token",
        (client["client_id"], client["client_secret"]),
        {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
         "code_verifier": verifier},
    )  # fmt: skip
    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert {r.json()["error"] for r in losers} == {"invalid_grant"}
    # RFC 6749 4.1.2: the replays revoked every token issued from the code.
    assert _userinfo_status(live, winners[0].json()["access_token"]) == 401


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_without_retries(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """``idp serve --production`` with no refresh retry window, on each database."""
    directory = tmp_path_factory.mktemp(f"no-retries-{request.param}")
    env = {"IDP_REFRESH_TOKEN_RETRY_GRACE": "0"}
    with live_on(request.param, directory, production=True, env=env) as idp:
        yield idp


def test_parallel_refresh_redemptions_exactly_one_wins_and_family_is_revoked(
    live_without_retries: LiveIdp,
) -> None:
    live = live_without_retries
    client, code, verifier = _tokens_and_code(live)
    auth = (client["client_id"], client["client_secret"])
    first = requests.post(
        live.url + "/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
              "code_verifier": verifier},
        auth=auth, timeout=30,
    )  # fmt: skip
    assert first.status_code == 200, first.text
    responses = _post_all(
        live.url + "/token",
        auth,
        {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert {r.json()["error"] for r in responses if r.status_code != 200} == {"invalid_grant"}
    # RFC 9700 4.14.2: the reuse revoked the family, the winner's new tokens included.
    assert _userinfo_status(live, winners[0].json()["access_token"]) == 401
    again = requests.post(
        live.url + "/token",
        data={"grant_type": "refresh_token", "refresh_token": winners[0].json()["refresh_token"]},
        auth=auth, timeout=30,
    )  # fmt: skip
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def test_parallel_device_code_polls_exactly_one_wins_and_replay_revokes(live: LiveIdp) -> None:
    """RFC 8628 3.5 / the consume-once primitive: an approved device code polled by N parallel
    requests gives tokens to exactly one; the others are invalid_grant, and, as for a replayed
    code, the replay revokes what was issued."""
    email = f"{secrets.token_hex(4)}@example.com"
    live.create_user(email, PASSWORD)
    client = live.create_client(name="Parallel TV", redirect_uris=[], first_party=True,
                                grant_types=[DEVICE_GRANT])  # fmt: skip
    auth = (client["client_id"], client["client_secret"])
    codes = requests.post(live.url + "/device_authorization", data={"scope": "openid"},
                          auth=auth, timeout=30).json()  # fmt: skip
    with Browser() as browser:
        approved = answer_device_request(browser, live.url, codes["user_code"], email=email,
                                         password=PASSWORD)  # fmt: skip
    assert approved.status_code == 200, approved.text
    responses = _post_all(
        live.url + "/token", auth, {"grant_type": DEVICE_GRANT, "device_code": codes["device_code"]}
    )
    winners = [r for r in responses if r.status_code == 200]
    losers = [r for r in responses if r.status_code != 200]
    assert len(winners) == 1, [r.status_code for r in responses]
    assert {r.json()["error"] for r in losers} == {"invalid_grant"}
    assert _userinfo_status(live, winners[0].json()["access_token"]) == 401
