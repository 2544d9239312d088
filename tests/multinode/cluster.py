"""Three idp nodes behind haproxy, and a user agent that records which node answered each request.

The nodes share one PostgreSQL database, one Redis, one issuer (the balancer's address) and one
secret key; nothing else. Requests go through haproxy unless a test names a node.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import redis
import requests
from flask import Flask
from joserfc import jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.extensions import db
from idp.services.crypto import KeyedHasher, derive_key
from idp.services.users import normalise_email
from tests.conftest import app_overrides
from tests.support.authenticator import SoftAuthenticator
from tests.support.balancer import SERVED_BY, Haproxy, run_haproxy
from tests.support.factories import create_client, create_user
from tests.support.flow import shown_pending_id
from tests.support.live import FromAddress, LiveIdp, free_port, idp_env

NODE_NAMES = ("node1", "node2", "node3")
#: The machine's Redis, a database of its own for these tests. Runs in parallel (two checkouts,
#: two engineers) still never share a counter: each run has its own secret key, so its account
#: keys (keyed hashes of emails) differ, and haproxy and the test's user agents connect from a
#: loopback address of the run's own, so the per-address counter differs too.
REDIS_URL = "redis://127.0.0.1:6379/7"
#: Seconds a node trusts its cached signing keys: small, so that rotation is seen quickly.
KEY_CACHE_TTL = 3
REDIRECT_URI = "http://localhost:9/callback"
POST_LOGOUT_URI = "http://localhost:9/signed-out"
SCOPE = "openid profile email offline_access"
TIMEOUT = 20
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_meta(html: str) -> str:
    match = CSRF_META.search(html)
    assert match, "no csrf-token meta tag on the page"
    return match.group(1)


def csrf_field(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# -- the cluster ----------------------------------------------------------------------------------
@dataclass
class Cluster:
    balancer: Haproxy
    nodes: dict[str, LiveIdp]
    secret_key: str
    redis_client: Any
    #: The test's own app on the shared database, for setting up accounts and clients without
    #: starting an ``idp`` command per user (the nodes see them only through the database).
    setup_app: Flask
    #: The loopback address haproxy and the test's user agents connect from.
    source_address: str
    #: Redis keys this run's tests may have written, deleted at the end.
    redis_keys: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        """The issuer: every node names the balancer, never itself."""
        return self.balancer.url

    def node_url(self, name: str) -> str:
        return self.nodes[name].url

    # -- accounts and clients -------------------------------------------------------------------
    def new_user(self, password: str, *, name: str = "Multi Node") -> tuple[str, str]:
        """A user with a password: (email, sub). Its rate-limit keys are cleaned up later."""
        email = f"mn-{secrets.token_hex(5)}@example.com"
        user = create_user(self.setup_app, email=email, password=password, name=name)
        subject = self.email_key(email)
        for key in (f"pwd:{subject}", f"backup:{subject}", f"otp:{user.id}",
                    f"backup:{user.id}"):  # fmt: skip
            self.redis_keys.update((f"idp:fail:{key}", f"idp:fail-at:{key}"))
        return email, user.id

    def new_client(self) -> dict[str, Any]:
        """A first-party confidential client (client_secret_basic)."""
        client = create_client(self.setup_app, name="Multi-node RP", redirect_uris=[REDIRECT_URI],
                               post_logout_redirect_uris=[POST_LOGOUT_URI])  # fmt: skip
        return {"client_id": client.client_id, "client_secret": client.client_secret}

    def email_key(self, email: str) -> str:
        """The rate-limit subject the nodes derive for an email (idp.web.email_key)."""
        hasher = KeyedHasher(derive_key(self.secret_key, "idp attempt keys"))
        return hasher.hash(normalise_email(email))[:32]

    def failures(self, key: str) -> int:
        """The shared failure count of a rate-limit key, read from Redis."""
        return int(self.redis_client.get(f"idp:fail:{key}") or 0)

    # -- keys -----------------------------------------------------------------------------------
    def jwks(self, node: str) -> KeySet:
        response = requests.get(self.node_url(node) + "/jwks", timeout=TIMEOUT)
        response.raise_for_status()
        return KeySet.import_key_set(response.json())

    def published_kids(self, node: str) -> set[str]:
        response = requests.get(self.node_url(node) + "/jwks", timeout=TIMEOUT)
        response.raise_for_status()
        return {key["kid"] for key in response.json()["keys"]}

    # -- failures -------------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL the node's whole process group (gunicorn master and workers): no goodbye."""
        node = self.nodes[name]
        process, node.process = node.process, None
        assert process is not None, f"{name} is not running"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.nodes[name].start()
        self.balancer.wait_for_states({name: "UP"})


def node_env(
    home: Path, issuer: str, database_url: str, secret_key: str, redis_url: str = REDIS_URL
) -> dict[str, str]:
    env = idp_env(home, issuer, database_url)
    env.update(
        IDP_SECRET_KEY=secret_key,
        IDP_REDIS_URL=redis_url,
        IDP_KEY_CACHE_TTL=str(KEY_CACHE_TTL),
        # Cheap Argon2 parameters keep password flows fast (tests/conftest.py FAST_ARGON2).
        IDP_ARGON2_MEMORY_KIB="1024",
        IDP_ARGON2_TIME_COST="1",
        IDP_PASSKEY_PROMPT="false",
    )
    return env


@contextlib.contextmanager
def start_cluster(
    directory: Path, database_url: str, redis_url: str = REDIS_URL
) -> Iterator[Cluster]:
    """haproxy, ``idp init`` once on the shared database, three ``idp serve --production``
    nodes; all stopped by PID afterwards. ``redis_url``: a private Redis, for a test that
    stops it."""
    ports = {name: free_port() for name in NODE_NAMES}
    # A loopback address of this run's own (Linux routes all of 127.0.0.0/8 to lo).
    source = ".".join(["127", *(str(secrets.randbelow(254) + 1) for _ in range(3))])
    # The balancer first: its port, which every node names in its issuer, is taken at once.
    with run_haproxy(directory / "haproxy", free_port(), ports,
                     source_address=source) as balancer:  # fmt: skip
        secret_key = "multinode-" + secrets.token_urlsafe(32)
        nodes = {
            name: LiveIdp(
                url=f"http://localhost:{port}",
                port=port,
                directory=directory / name,
                env=node_env(directory / name, balancer.url, database_url, secret_key, redis_url),
                log_path=directory / name / "server.log",
                production=True,
            )
            for name, port in ports.items()
        }
        for node in nodes.values():
            (node.directory / "instance").mkdir(parents=True)
        nodes[NODE_NAMES[0]].run("init")
        overrides = app_overrides(database_url, directory / "setup", secret_key=secret_key,
                                  issuer=balancer.url)  # fmt: skip
        setup_app = create_app(overrides)
        redis_client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        cleanup = {f"idp:fail:addr:{source}", f"idp:fail-at:addr:{source}"}
        try:
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(LiveIdp.start, nodes.values()))
            balancer.wait_until_all_up()
            yield Cluster(balancer, nodes, secret_key, redis_client, setup_app, source,
                          redis_keys=cleanup)  # fmt: skip
        finally:
            # The balancer's idle keep-alive connections would hold up the nodes' graceful stop.
            balancer.stop()
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(LiveIdp.stop, nodes.values()))
            with contextlib.suppress(redis.RedisError):  # a private Redis may be stopped
                # The source address's counters are per fixed window (idp.services.rate_limits).
                cleanup.update(redis_client.scan_iter(match=f"idp:fail*:win:addr:*:{source}"))
                redis_client.delete(*cleanup)
            redis_client.close()
            with setup_app.app_context():
                db.session.remove()
                db.engine.dispose()


# -- a user agent ---------------------------------------------------------------------------------
class UserAgent:
    """One browser (its own cookie jar, no automatic redirects) talking to the balancer. Every
    response's ``X-Served-By`` is recorded in ``served_by``."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.session = requests.Session()
        # From the run's own address, also when a test talks to a node directly.
        self.session.mount("http://", FromAddress(cluster.source_address))
        self.served_by: list[str] = []
        self.trail: list[str] = []

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> UserAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        url = urljoin(self.cluster.url, url)
        if method == "POST":
            # What a browser sends with a form or fetch() from idp's own pages.
            kwargs.setdefault("headers", {}).setdefault("Origin", self.cluster.url)
        response = self.session.request(
            method, url, allow_redirects=False, timeout=TIMEOUT, **kwargs
        )
        node = response.headers.get(SERVED_BY, "?")
        self.served_by.append(node)
        self.trail.append(f"{method} {urlsplit(url).path} -> {response.status_code} @{node}")
        return response

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def mark(self) -> int:
        return len(self.served_by)

    def nodes_since(self, mark: int) -> list[str]:
        return self.served_by[mark:]

    def describe(self) -> str:
        return " | ".join(self.trail)


@dataclass
class Authorization:
    """One authorization request of a relying party (PKCE S256, state, nonce)."""

    client: dict[str, Any]
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    state: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def params(self, **extra: str) -> dict[str, str]:
        challenge = hashlib.sha256(self.verifier.encode()).digest()
        return {
            "response_type": "code",
            "client_id": self.client["client_id"],
            "redirect_uri": REDIRECT_URI,
            "scope": SCOPE,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            **extra,
        }

    @property
    def basic(self) -> tuple[str, str]:
        return (self.client["client_id"], self.client["client_secret"])


# -- flows ----------------------------------------------------------------------------------------
def authorize(agent: UserAgent, request: Authorization, **extra: str) -> requests.Response:
    return agent.get("/authorize", params=request.params(**extra))


def login_page(agent: UserAgent, shown: str | requests.Response) -> tuple[str, str]:
    """A sign-in page: (CSRF token, pending request). ``shown`` is the page the authorization
    endpoint answered with (docs/architecture.md: it shows the page itself), or an address to
    load (``/login``)."""
    if isinstance(shown, str):
        page = agent.get(shown)
        assert page.status_code == 200, agent.describe()
        return csrf_meta(page.text), query_of(shown).get("request", "")
    assert shown.status_code == 200, agent.describe()
    return csrf_meta(shown.text), shown_pending_id(shown.text) or ""


def password_step(
    agent: UserAgent, email: str, password: str, *, csrf: str, pending: str = ""
) -> requests.Response:
    form = {"csrf_token": csrf, "email": email, "password": password}
    if pending:
        form["request"] = pending
    return agent.post("/login", data=form)


def passkey_options(agent: UserAgent, csrf: str) -> dict[str, Any]:
    response = agent.post("/login/passkey/options", json={}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 200, agent.describe()
    ceremony: dict[str, Any] = response.json()
    return ceremony


def passkey_verify(
    agent: UserAgent,
    authenticator: SoftAuthenticator,
    ceremony: dict[str, Any],
    *,
    csrf: str,
    pending: str = "",
) -> str:
    """Answer the ceremony with the authenticator; where the page is sent next."""
    credential = authenticator.get(ceremony["publicKey"], origin=agent.cluster.url)
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential,
            "request": pending, "next": ""}  # fmt: skip
    response = agent.post("/login/passkey/verify", json=body, headers={"X-CSRFToken": csrf})
    assert response.status_code == 200, f"{response.text}\n{agent.describe()}"
    destination: str = response.json()["redirect"]
    return destination


def add_passkey(agent: UserAgent, authenticator: SoftAuthenticator, page: str = "/account") -> None:
    """The "Add a passkey" button: registration options, ``create()``, store."""
    shown = agent.get(page)
    assert shown.status_code == 200, agent.describe()
    headers = {"X-CSRFToken": csrf_meta(shown.text)}
    options = agent.post("/account/passkeys/options", json={}, headers=headers)
    assert options.status_code == 200, f"{options.text}\n{agent.describe()}"
    ceremony = options.json()
    credential = authenticator.create(ceremony["publicKey"], origin=agent.cluster.url)
    body = {"challenge_id": ceremony["challenge_id"], "credential": credential}
    stored = agent.post("/account/passkeys", json=body, headers=headers)
    assert stored.status_code == 201, f"{stored.text}\n{agent.describe()}"


def follow_to_callback(agent: UserAgent, response: requests.Response) -> dict[str, str]:
    """Follow idp's redirects until one leaves for the relying party; the callback's query."""
    for _ in range(10):
        assert response.status_code in (302, 303), f"{response.status_code}\n{agent.describe()}"
        location = urljoin(agent.cluster.url, response.headers["Location"])
        if location.startswith(REDIRECT_URI):
            return query_of(location)
        response = agent.get(location)
    raise AssertionError(f"too many redirects\n{agent.describe()}")


def code_of(agent: UserAgent, request: Authorization, response: requests.Response | str) -> str:
    """The code of the callback ``response`` leads to; a string is an address already (a passkey
    verify's answer: the callback itself, or idp's next page)."""
    if isinstance(response, str):
        location = urljoin(agent.cluster.url, response)
        callback = (
            query_of(location)
            if location.startswith(REDIRECT_URI)
            else follow_to_callback(agent, agent.get(location))
        )
    else:
        callback = follow_to_callback(agent, response)
    assert callback.get("state") == request.state, callback
    assert callback.get("iss") == agent.cluster.url, callback  # RFC 9207
    assert "code" in callback, callback
    return callback["code"]


def exchange(agent: UserAgent, request: Authorization, code: str) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": request.verifier}  # fmt: skip
    return agent.post("/token", data=data, auth=request.basic)


def refresh(agent: UserAgent, request: Authorization, refresh_token: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return agent.post("/token", data=data, auth=request.basic)


def userinfo(agent: UserAgent, access_token: str) -> requests.Response:
    return agent.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def verified_id_token(
    cluster: Cluster, node: str, id_token: str, nonce: str, jwks: KeySet | None = None
) -> dict[str, Any]:
    """The ID token's claims, verified against one node's JWKS (what a relying party does)."""
    keys = jwks if jwks is not None else cluster.jwks(node)
    claims = dict(jwt.decode(id_token, keys, algorithms=["RS256"]).claims)
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": cluster.url},
                          exp={"essential": True}).validate(claims)  # fmt: skip
    assert claims["nonce"] == nonce, claims
    return claims


def jwt_header(token: str) -> dict[str, Any]:
    """A JWT's protected header, unverified: which key says it signed."""
    segment = token.split(".")[0]
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value
