"""Fixtures of the browser tests: Debian's Chromium through Playwright, a live idp served as
``http://localhost:PORT`` (``localhost`` is the WebAuthn RP ID; 127.0.0.1 is not a valid one), a
tiny relying party whose ``/callback`` records what it receives, and DevTools WebAuthn virtual
authenticators, one per simulated user."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import (
    Browser,
    BrowserContext,
    CDPSession,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from tests.support.live import IDP_BIN, LiveIdp, free_port, start_live_idp

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
#: Playwright's timeout per action, wait and ``expect`` assertion. The pages answer in
#: milliseconds; the bound only matters on a loaded CI machine, where a passkey ceremony (options,
#: the authenticator, verify, the page's reload) behind a busy second worker took over five
#: seconds, Playwright's own default for ``expect``. A passing wait returns as soon as it holds.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)
PASSWORD = "correct horse battery staple 42"
#: Browser context options of the viewports the pages are checked on: a phone (a 390 px wide
#: screen, touch, the ``<meta name=viewport>`` honoured) and a desktop.
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
}  # fmt: skip
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}
#: Disables passkey autofill so that only the button or the email step runs a ceremony.
NO_CONDITIONAL_MEDIATION = (
    "if (window.PublicKeyCredential) "
    "PublicKeyCredential.isConditionalMediationAvailable = async () => false;"
)
#: CSP violations also land in the console as errors; this names them unambiguously.
REPORT_CSP_VIOLATIONS = (
    "document.addEventListener('securitypolicyviolation', (e) => console.error("
    "'CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI));"
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps the call phase's report on the item: a failed test leaves screenshots behind."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


# -- the live idp ---------------------------------------------------------------------------------
@contextlib.contextmanager
def serve_idp(prefix: str, env: dict[str, str], *, init: bool = True) -> Iterator[LiveIdp]:
    """``idp init`` (unless ``init=False``) and ``idp serve`` in a temporary directory of its
    own, with ``env``'s ``IDP_*`` settings."""
    if not IDP_BIN.exists():
        pytest.fail(f"{IDP_BIN} does not exist: install idp into the venv (pip install -e .)")
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        start_live_idp(Path(tmp), env=env, init=init) as idp,
    ):
        yield idp


@pytest.fixture(scope="session")
def live_idp() -> Iterator[LiveIdp]:
    # These tests walk the sign-in itself; the "create a passkey?" page that may follow a
    # password-only sign-in is a feature of its own (ignored by versions without it).
    # A device polls every second (not 5): the device flow's test waits less for its answer.
    env = {"IDP_PASSKEY_PROMPT": "false", "IDP_DEVICE_POLL_INTERVAL": "1"}
    with serve_idp("idp-browser-", env) as idp:
        yield idp


@pytest.fixture(scope="module")
def empty_idp() -> Iterator[LiveIdp]:
    """``idp serve`` on an empty database, nothing run before it: no users, no clients, no admin.

    It runs with ``IDP_PRODUCTION=true`` and no ``IDP_ADMIN_EMAIL``, so that the server's start
    creates no one (in development it would bootstrap ``admin@localhost``): the first admin is
    the test's to create, with ``idp init --admin-email`` as an operator would."""
    with serve_idp("idp-browser-empty-", {"IDP_PRODUCTION": "true"}, init=False) as idp:
        yield idp


class Accounts:
    """Users created with ``PASSWORD`` through the CLI. Each ``idp users create`` is a process
    start; a few are made in the background, in parallel, while the browser starts."""

    def __init__(self, idp: LiveIdp, prepared: int) -> None:
        self.idp = idp
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="accounts")
        self.ready: list[Future[str]] = [self.pool.submit(self._create) for _ in range(prepared)]

    def _create(self) -> str:
        email = f"user-{secrets.token_hex(5)}@example.com"
        self.idp.create_user(email, PASSWORD, name="Ada Browser", in_process=False)
        return email

    def new(self) -> str:
        """The email of a new user with a password and nothing else."""
        return self.ready.pop(0).result() if self.ready else self._create()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def accounts(live_idp: LiveIdp) -> Iterator[Accounts]:
    created = Accounts(live_idp, prepared=6)
    try:
        yield created
    finally:
        created.close()


# -- the relying party ----------------------------------------------------------------------------
@dataclass
class Authorization:
    """One authorization request of the relying party, with its PKCE verifier."""

    url: str
    state: str
    nonce: str
    verifier: str


@dataclass
class RelyingParty:
    """A confidential first-party client whose redirect URI is served by a thread."""

    idp: LiveIdp
    base: str
    client_id: str
    client_secret: str
    callbacks: list[dict[str, str]] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return self.base + "/callback"

    def authorization(self, **extra: str) -> Authorization:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            **extra,
        }
        endpoint = self.idp.discovery()["authorization_endpoint"]
        return Authorization(f"{endpoint}?{urlencode(query)}", state, nonce, verifier)

    def callbacks_for(self, state: str) -> list[dict[str, str]]:
        return [c for c in self.callbacks if c.get("state") == state]

    def callback(self, state: str) -> dict[str, str]:
        """What the callback received for this state: code and iss (or an error)."""
        matching = self.callbacks_for(state)
        assert len(matching) == 1, f"callbacks for state {state!r}: {self.callbacks}"
        return matching[0]

    def redeem(self, authorization: Authorization) -> dict[str, Any]:
        """Exchange the code (client_secret_basic) and return the verified ID token's claims."""
        received = self.callback(authorization.state)
        assert "code" in received, f"the callback got no code: {received}"
        assert received.get("iss") == self.idp.url
        response = requests.post(
            self.idp.discovery()["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": received["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": authorization.verifier,
            },
            auth=(self.client_id, self.client_secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        jwks = requests.get(self.idp.discovery()["jwks_uri"], timeout=10).json()
        token = jwt.decode(response.json()["id_token"], KeySet.import_key_set(jwks))
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.idp.url},
            aud={"essential": True, "value": self.client_id},
            nonce={"essential": True, "value": authorization.nonce},
            sub={"essential": True},
            auth_time={"essential": True},
        ).validate(token.claims)
        return dict(token.claims)


class _CallbackHandler(BaseHTTPRequestHandler):
    callbacks: list[dict[str, str]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/callback":
            self.send_error(404)
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.callbacks.append(query)
        body = (
            b'<!doctype html><title>RP</title><link rel="icon" href="data:,">'
            b"<h1>Back at the relying party</h1>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is about the idp."""


@contextlib.contextmanager
def callback_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A relying party's ``/callback`` served by a thread: its base URL and what it received."""
    port = free_port()
    callbacks: list[dict[str, str]] = []
    handler = type("Handler", (_CallbackHandler,), {"callbacks": callbacks})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="rp", daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}", callbacks
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def relying_party(live_idp: LiveIdp) -> Iterator[RelyingParty]:
    with callback_server() as (base, callbacks):
        client = live_idp.create_client(
            name="Browser RP", redirect_uris=[base + "/callback"], first_party=True
        )
        yield RelyingParty(
            idp=live_idp,
            base=base,
            client_id=client["client_id"],
            client_secret=client["client_secret"],
            callbacks=callbacks,
        )


# -- a second idp node that offers passkeys after a password-only sign-in ------------------------
@pytest.fixture(scope="session")
def prompting_idp(live_idp: LiveIdp) -> Iterator[LiveIdp]:
    """A second ``idp serve`` of ``live_idp``'s database and keys (no ``idp init``: its users,
    made by ``accounts``, and its clients are this node's too), on its own port and issuer, with
    ``IDP_PASSKEY_PROMPT`` on: a password-only sign-in is followed by ``/login/passkey-prompt``."""
    port = free_port()
    issuer = f"http://localhost:{port}"
    env = {**live_idp.env, "IDP_ISSUER": issuer, "IDP_PASSKEY_PROMPT": "true"}
    idp = LiveIdp(
        url=issuer,
        port=port,
        directory=live_idp.directory,
        env=env,
        log_path=live_idp.directory / "server-prompting.log",
    )
    idp.start()
    try:
        yield idp
    finally:
        idp.stop()


@pytest.fixture(scope="session")
def prompting_relying_party(prompting_idp: LiveIdp, relying_party: RelyingParty) -> RelyingParty:
    """``relying_party``'s client and callback, talking to the prompting node."""
    return RelyingParty(
        idp=prompting_idp,
        base=relying_party.base,
        client_id=relying_party.client_id,
        client_secret=relying_party.client_secret,
        callbacks=relying_party.callbacks,
    )


# -- the browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@dataclass
class BrowserUser:
    """One simulated person: a fresh browser profile with its own virtual authenticator."""

    context: BrowserContext
    page: Page
    cdp: CDPSession
    authenticator_id: str
    test_name: str
    problems: list[str]
    allowed: list[re.Pattern[str]]
    requests: list[str] = field(default_factory=list)

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        return list(result["credentials"])

    def add_credential(self, credential: dict[str, Any]) -> None:
        self.cdp.send(
            "WebAuthn.addCredential",
            {"authenticatorId": self.authenticator_id, "credential": credential},
        )

    def allow_console_error(self, pattern: str) -> None:
        """An expected console error (a deliberate 400 or 401 shows up as one)."""
        self.allowed.append(re.compile(pattern))

    def count(self, path: str) -> int:
        return sum(1 for url in self.requests if urlsplit(url).path == path)

    def screenshot(self, step: str, *, full_page: bool = True) -> Path:
        """The page in test-artifacts/screenshots/; ``full_page=False``: what is on the screen
        (the viewport), to see what a phone shows without scrolling."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.test_name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def document(self, step: str, guide_images: Path) -> None:
        """A screenshot in test-artifacts/screenshots/; with UPDATE_DOCS_IMAGES=1 also the page's
        card alone (no empty margins) in ``guide_images``, for a guide in docs/."""
        self.screenshot(step)
        if os.environ.get("UPDATE_DOCS_IMAGES") == "1":
            guide_images.mkdir(parents=True, exist_ok=True)
            self.page.locator("main.card").screenshot(path=str(guide_images / f"{step}.png"))

    def like_desktop_chrome(self) -> None:
        """The pages name browsers from their User-Agent: the screenshots show "Chrome" rather
        than headless Chromium's "HeadlessChrome"."""
        agent = str(self.page.evaluate("navigator.userAgent"))
        self.cdp.send(
            "Emulation.setUserAgentOverride",
            {"userAgent": agent.replace("HeadlessChrome", "Chrome")},
        )

    def unexpected_problems(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]


#: How far the page reaches past the viewport's right edge (a horizontal page scroll), and the
#: elements that reach past it, to say what to fix. The width is the device's, not
#: ``innerWidth``: on a phone (``is_mobile``) a page wider than the screen widens the layout
#: viewport to its own width, so that ``innerWidth`` grows with it and hides the overflow.
OVERFLOW = """(width) => {
  const wider = [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > width + 0.5)
    .slice(0, 5)
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
      + (typeof e.className === "string" && e.className.trim()
        ? "." + e.className.trim().split(/\\s+/).join(".") : "")
      + (e.parentElement.closest("[id]") ? " in #" + e.parentElement.closest("[id]").id : ""));
  const widest = Math.max(document.documentElement.scrollWidth, window.innerWidth);
  return { by: widest - width, wider };
}"""


def overflow(page: Page) -> str | None:
    """``None`` when the page is no wider than its viewport (no horizontal page scroll), else by
    how much it is wider and which elements reach past the viewport's edge."""
    viewport = page.viewport_size
    assert viewport is not None
    found = page.evaluate(OVERFLOW, viewport["width"])
    if found["by"] <= 0:
        return None
    return (
        f"{page.url} is {found['by']} px wider than the {viewport['width']} px viewport; "
        f"past its edge: {found['wider']}"
    )


#: How many lines an element's text takes: the distinct tops of its text's line boxes.
TEXT_LINES = """(element) => {
  const range = document.createRange();
  range.selectNodeContents(element);
  return new Set([...range.getClientRects()].map((rect) => Math.round(rect.top))).size;
}"""


def fits_viewport(page: Page) -> None:
    """No horizontal page scroll: the page is no wider than its viewport."""
    wider = overflow(page)
    assert wider is None, wider


def add_first_passkey(
    page: Page, idp: LiveIdp, *, on_codes: Callable[[], object] | None = None
) -> None:
    """On a restricted session's only page: add the account's first passkey, save the backup
    codes it comes with (``on_codes`` runs while they are shown), and land on the account page."""
    # The button works once account.js (at the end of the page) has run: a click on the button
    # as soon as it is painted would land before its handler.
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator("#backup-codes li")).to_have_count(10)
    if on_codes is not None:
        on_codes()
    page.get_by_role("button", name="I saved them").click()
    expect(page).to_have_url(f"{idp.url}/account")
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()


def _console_text(message: ConsoleMessage) -> str:
    location = message.location
    where = f" ({location.get('url')}:{location.get('lineNumber')})" if location else ""
    return f"console.{message.type}: {message.text}{where}"


@pytest.fixture
def new_user(
    browser: Browser, request: pytest.FixtureRequest
) -> Iterator[Callable[..., BrowserUser]]:
    """Opens a browser context + page with a virtual authenticator (user verification on).

    Console errors and page errors (CSP violations included) fail the test at teardown unless
    the test allowed them with ``allow_console_error``."""
    opened: list[BrowserUser] = []
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def open_user(
        *, conditional_mediation: bool = True, device: dict[str, Any] | None = None
    ) -> BrowserUser:
        """``device``: context options such as ``PHONE`` or ``DESKTOP`` (default: 800x900)."""
        context = browser.new_context(
            locale="en-US", **(device or {"viewport": {"width": 800, "height": 900}})
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        if not conditional_mediation:
            context.add_init_script(NO_CONDITIONAL_MEDIATION)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        authenticator = cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        user = BrowserUser(
            context=context,
            page=page,
            cdp=cdp,
            authenticator_id=authenticator["authenticatorId"],
            test_name=test_name,
            problems=[],
            allowed=[],
        )
        page.on(
            "console",
            lambda m: user.problems.append(_console_text(m)) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: user.problems.append(f"page error: {e}"))
        page.on("request", lambda r: user.requests.append(r.url))
        opened.append(user)
        return user

    yield open_user

    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    problems: list[str] = []
    for user in opened:
        problems += user.unexpected_problems()
        if failed and not user.page.is_closed():
            with contextlib.suppress(PlaywrightError):
                user.screenshot("failed")
        with contextlib.suppress(PlaywrightError):  # closed already by the test
            user.context.close()
    if problems:
        pytest.fail("the browser reported errors:\n" + "\n".join(problems), pytrace=False)
