"""Client addresses behind reverse proxies: X-Forwarded-For is believed only for the number of
hops the deployment trusts (setting ``trusted_proxies``), so that nobody can pick their own
address and dodge the per-address limits or write a false one into the audit log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from idp.extensions import db
from idp.models import AuditEvent
from tests.support.apps import app_on
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, csrf_token

BALANCER = "10.0.0.5"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def failed_sign_in_address(app: Flask, forwarded_for: str | None) -> str:
    user = create_user(app, email=f"p{id(forwarded_for)}@example.com")
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = BALANCER
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = browser.get("/login", headers=headers)
    browser.post(
        "/login",
        data={"csrf_token": csrf_token(page.text), "email": user.email, "password": "wrong-one!"},
        headers=headers,
    )
    with app.app_context():
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.outcome == "failure").order_by(AuditEvent.id.desc())
        ).first()
        assert event is not None
        return event.ip_address


@pytest.fixture(scope="module")
def behind_one_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    with app_on("sqlite", tmp_path_factory.mktemp("proxy"), trusted_proxies=1) as app:
        yield app


def test_forwarded_for_is_ignored_unless_a_proxy_is_trusted(app: Flask) -> None:
    assert failed_sign_in_address(app, "203.0.113.50") == BALANCER


def test_behind_a_trusted_proxy_the_clients_address_counts(behind_one_proxy: Flask) -> None:
    assert failed_sign_in_address(behind_one_proxy, "203.0.113.50") == "203.0.113.50"


def test_a_client_cannot_prepend_a_forged_address(behind_one_proxy: Flask) -> None:
    """The proxy appends what it saw; only that right-most entry is believed (RFC 7239 8.1)."""
    assert failed_sign_in_address(behind_one_proxy, "198.51.100.1, 203.0.113.50") == "203.0.113.50"


def test_trusted_proxies_is_never_negative(tmp_path: Path) -> None:
    from idp.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="trusted_proxies"):
        load_settings({"trusted_proxies": -1, "instance_path": str(tmp_path)}, environ={})


def test_the_documented_nginx_forwards_the_client_address_and_names_trusted_proxies() -> None:
    """docs/operations.md's nginx example appends the client's address to X-Forwarded-For (what
    ``trusted_proxies = 1`` believes) and names the setting beside it; without the header every
    client behind it would share the proxy's address and one per-address budget."""
    guide = (DOCS / "operations.md").read_text()
    blocks = re.findall(r"```nginx\n(.*?)```", guide, flags=re.DOTALL)
    assert blocks, "docs/operations.md should have an nginx example"
    for block in blocks:
        lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in lines, block
        assert "trusted_proxies" in block, block
    assert "IDP_TRUSTED_PROXIES=1" in guide
    for page in DOCS.glob("*.md"):
        assert "until a trusted-proxy setting exists" not in page.read_text(), page.name


def test_behind_a_trusted_proxy_a_token_requests_audit_names_the_clients_address(
    behind_one_proxy: Flask,
) -> None:
    """The token endpoint is served below Flask (idp.web.direct), inside ProxyFix as Flask is."""
    app = behind_one_proxy
    user = create_user(app, email="token-proxy@example.com")
    registered = create_client(app)
    relying_party = RelyingParty(app.test_client(), registered)
    tokens = relying_party.tokens_for(user)
    relying_party.browser.environ_base["REMOTE_ADDR"] = BALANCER
    relying_party.browser.environ_base["HTTP_X_FORWARDED_FOR"] = "203.0.113.77"
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    # The same refresh token twice within the retry grace: the second is audited.
    for _ in range(2):
        assert relying_party.token(form).status_code == 200
    with app.app_context():
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.kind == "token.refresh_retried")
        ).one()
        assert event.ip_address == "203.0.113.77"


@pytest.fixture(scope="module")
def https_behind_a_balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """An https issuer, whose TLS a balancer ends before it talks plain http to the node."""
    with app_on(
        "sqlite", tmp_path_factory.mktemp("tls-ends"), issuer="https://id.example.com"
    ) as app:
        yield app


@pytest.mark.parametrize(
    "forwarded",
    [
        {"X-Forwarded-For": "203.0.113.9"},  # the documented haproxy: no X-Forwarded-Proto
        {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},  # trusted_proxies 0
    ],
)
def test_the_token_endpoint_answers_behind_a_balancer_that_ends_tls(
    https_behind_a_balancer: Flask, forwarded: dict[str, str]
) -> None:
    """RFC 6749 3.2 (TLS) holds where the https issuer says TLS ends: the node's own hop is plain
    http, whatever the balancer says of it, and the token endpoint answers."""
    app = https_behind_a_balancer
    registered = create_client(app, grant_types=["client_credentials"])
    assert registered.client_secret is not None
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = BALANCER
    response = browser.post(
        "/token", data={"grant_type": "client_credentials"}, headers=forwarded,
        auth=(registered.client_id, registered.client_secret), base_url="http://id.example.com",
    )  # fmt: skip
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def https_behind_a_trusted_balancer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    with app_on(
        "sqlite", tmp_path_factory.mktemp("tls-said"), issuer="https://id.example.com",
        trusted_proxies=1,
    ) as app:  # fmt: skip
        yield app


def test_a_trusted_balancer_saying_the_client_used_plain_http_is_insecure_transport(
    https_behind_a_trusted_balancer: Flask,
) -> None:
    """RFC 6749 3.2: the issuer's https is taken as given only where nobody said otherwise; a
    trusted proxy's X-Forwarded-Proto: http says the client sent its secret in clear."""
    app = https_behind_a_trusted_balancer
    registered = create_client(app, grant_types=["client_credentials"])
    assert registered.client_secret is not None
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = BALANCER
    answers = {}
    for scheme in ("http", "https"):
        answers[scheme] = browser.post(
            "/token", data={"grant_type": "client_credentials"},
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": scheme},
            auth=(registered.client_id, registered.client_secret), base_url="http://id.example.com",
        )  # fmt: skip
    assert answers["http"].status_code == 400
    assert answers["http"].get_json()["error"] == "insecure_transport"
    assert answers["https"].status_code == 200
