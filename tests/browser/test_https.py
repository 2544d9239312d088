"""idp over https in a real browser, as deployed: TLS ended by haproxy in front of the node
(docs/operations.md), a throwaway certificate for ``localhost`` that Chromium is told to
trust, and the issuer ``https://localhost:PORT``. Every other browser test serves plain http,
where a browser sends what it does not send over https: this one sees the forms posted with no
Referer and ``Origin: null`` (the pages' ``Referrer-Policy: no-referrer``), and the cookies with
the ``__Host-`` prefix and ``Secure``."""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, Playwright, Request, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD, BrowserUser, serve_idp
from tests.support.balancer import Haproxy, run_haproxy
from tests.support.live import LiveIdp, free_port
from tests.support.smtp import make_certificates

pytestmark = pytest.mark.browser

NewUser = Callable[..., BrowserUser]
VERIFY_PATH = "/login/passkey/verify"

#: haproxy ends TLS and tells the node the scheme it ended, as docs/operations.md's nginx does
#: (``X-Forwarded-Proto $scheme``), believed with ``trusted_proxies = 1``: the node's requests
#: are https to Flask too (``request.is_secure``), as behind a real proxy.
TLS_PROXY = """\
defaults
    mode http
    option forwardfor
    timeout connect 3s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend idp
    bind 127.0.0.1:{port} ssl crt {pem}
    http-request set-header X-Forwarded-Proto https
    default_backend idp_nodes

backend idp_nodes
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 200ms fall 2 rise 1
    server node1 127.0.0.1:{node_port}
"""


@dataclass(frozen=True)
class Certificate:
    #: The certificate and its key, one PEM file (haproxy's ``crt``).
    pem: Path
    #: base64 of the SHA-256 of its SubjectPublicKeyInfo: Chromium's
    #: ``--ignore-certificate-errors-spki-list`` takes the certificate as valid.
    spki_sha256: str


def self_signed_localhost(directory: Path) -> Certificate:
    """A throwaway certificate for ``localhost`` (the SMTP tests' CA and server pair), as
    haproxy takes it, with the SPKI hash Chromium is told to trust it by."""
    made = make_certificates(directory)
    pem = directory / "localhost.pem"
    pem.write_bytes(made.cert_file.read_bytes() + made.key_file.read_bytes())
    certificate = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Certificate(pem, base64.b64encode(hashlib.sha256(spki).digest()).decode())


@dataclass(frozen=True)
class HttpsIdp:
    issuer: str
    node: LiveIdp
    proxy: Haproxy


@pytest.fixture(scope="module")
def certificate() -> Iterator[Certificate]:
    with tempfile.TemporaryDirectory(prefix="idp-tls-") as tmp:
        yield self_signed_localhost(Path(tmp))


@pytest.fixture(scope="module")
def https_idp(certificate: Certificate) -> Iterator[HttpsIdp]:
    port = free_port()
    issuer = f"https://localhost:{port}"
    env = {"IDP_ISSUER": issuer, "IDP_TRUSTED_PROXIES": "1", "IDP_PASSKEY_PROMPT": "false"}
    with serve_idp("idp-browser-https-", env) as node:
        config = TLS_PROXY.format(port=port, pem=certificate.pem, node_port=node.port)
        with run_haproxy(
            node.directory / "haproxy", port, {"node1": node.port}, shipped=config
        ) as proxy:
            proxy.wait_until_all_up()
            yield HttpsIdp(issuer, node, proxy)


@pytest.fixture(scope="module")
def browser(playwright: Playwright, certificate: Certificate) -> Iterator[Browser]:
    """This module's Chromium, which takes the test's certificate as valid (WebAuthn refuses a
    page whose certificate error was merely ignored)."""
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}"],
    )
    yield browser
    browser.close()


def _posted(page: Page, path: str, submit: Callable[[], object]) -> dict[str, str]:
    """The headers the browser sent with the POST to ``path`` that ``submit`` made."""
    with page.expect_request(
        lambda request: request.method == "POST" and request.url.endswith(path)
    ) as posted:
        submit()
    request: Request = posted.value
    return request.all_headers()


def _assert_host_cookies(user: BrowserUser, issuer: str) -> None:
    """RFC 6265bis 4.1.3.2: a ``__Host-`` cookie is ``Secure``, has ``Path=/`` and no Domain."""
    cookies = user.context.cookies(issuer)
    names = {cookie["name"] for cookie in cookies}
    assert {"__Host-idp_session", "__Host-idp_csrf"} <= names, names
    for cookie in cookies:
        assert cookie["name"].startswith("__Host-"), cookie
        assert cookie["secure"] is True, cookie
        assert cookie["httpOnly"] is True, cookie
        assert cookie["path"] == "/", cookie
        assert cookie["domain"] == "localhost", cookie  # host-only: no leading dot


def test_over_https_forms_passkeys_and_logout_work_with_no_referer(
    https_idp: HttpsIdp, new_user: NewUser
) -> None:
    issuer = https_idp.issuer
    email = "ada-https@example.com"
    https_idp.node.create_user(email, PASSWORD, name="Ada Https")
    user = new_user()
    user.like_desktop_chrome()
    page = user.page

    page.goto(f"{issuer}/account")
    expect(page).to_have_url(f"{issuer}/login?next=/account")
    assert page.evaluate("window.isSecureContext") is True
    user.screenshot("1-login")

    # The password sign-in: a form POST that carries its CSRF token and, over https, no Referer.
    page.get_by_role("button", name="Use your password instead").click()
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    sign_in = page.get_by_role("button", name="Sign in", exact=True)
    sent = _posted(page, "/login", sign_in.click)
    # Fetch, "append a request Origin header": under Referrer-Policy no-referrer a POST's Origin
    # is serialized as "null".
    assert "referer" not in sent, sent
    assert sent.get("origin") == "null", sent
    expect(page).to_have_url(f"{issuer}/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    _assert_host_cookies(user, issuer)

    # The first passkey (WebAuthn over the test's certificate), with its backup codes.
    page.get_by_role("button", name="Add a passkey").click()
    saved = page.get_by_role("button", name="I saved them")
    items = page.locator("#passkey-list .passkey-item")
    expect(items.first.or_(saved)).to_be_visible()
    if saved.is_visible():
        saved.click()
    expect(items).to_have_count(1)
    assert len(user.credentials()) == 1
    user.screenshot("2-account-with-passkey")

    # A portal form.
    page.goto(f"{issuer}/account/profile")
    page.get_by_label("Name").fill("Ada Lovelace")
    sent = _posted(page, "/account/profile", page.get_by_role("button", name="Save name").click)
    assert "referer" not in sent, sent
    expect(page.locator(".flashes p")).to_have_text("Name saved.")
    expect(page.get_by_label("Name")).to_have_value("Ada Lovelace")
    user.screenshot("3-profile-saved")

    page.get_by_role("link", name="Sign-in methods").click()
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert "__Host-idp_session" not in {c["name"] for c in user.context.cookies(issuer)}
    user.screenshot("4-signed-out")

    # Signed out, /account sends the browser to the login page, where the passkey autofill
    # (answered at once by the virtual authenticator) signs it back in.
    page.goto(f"{issuer}/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    assert user.count(VERIFY_PATH) == 1, user.requests
    _assert_host_cookies(user, issuer)
    user.screenshot("5-passkey-sign-in")

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="You are signed out")).to_be_visible()
    assert "__Host-idp_session" not in {c["name"] for c in user.context.cookies(issuer)}
