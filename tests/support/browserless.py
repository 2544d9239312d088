"""A browser without a browser: a cookie jar, manual redirects and HTML form submission.

Drives idp's interactive pages (sign-in, consent, logout) over plain HTTP the way a user agent
would, so that relying-party libraries can be tested end to end without Chromium.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import requests

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_HOPS = 25
TIMEOUT = 15


class BrowserlessError(AssertionError):
    """The interactive flow did not go as a user agent would expect; the message says where."""


@dataclass
class Form:
    method: str
    action: str
    #: (name, value, type, checked) for every <input> with a name, in document order.
    inputs: list[tuple[str, str, str, bool]] = field(default_factory=list)
    #: (name, value) for every <button> with a name.
    buttons: list[tuple[str, str]] = field(default_factory=list)

    def field_names(self) -> set[str]:
        return {name for name, *_ in self.inputs}

    def has_button(self, name: str, value: str) -> bool:
        submits = {(n, v) for n, v, kind, _ in self.inputs if kind in ("submit", "image")}
        return (name, value) in self.buttons or (name, value) in submits

    def fields(self, **overrides: str) -> dict[str, str]:
        """What submitting the form sends: hidden and text inputs plus ``overrides``."""
        data: dict[str, str] = {}
        for name, value, kind, checked in self.inputs:
            if kind in ("submit", "button", "image", "reset", "file"):
                continue
            if kind in ("checkbox", "radio") and not checked:
                continue
            data.setdefault(name, value)
        data.update(overrides)
        return data


class _FormParser(HTMLParser):
    """Collects forms; HTMLParser already unescapes attribute values (``&amp;`` -> ``&``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name.lower(): (value or "") for name, value in attrs}
        present = {name.lower() for name, _ in attrs}
        if tag == "form":
            self._current = Form(
                method=values.get("method", "get").lower() or "get",
                action=values.get("action", ""),
            )
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and values.get("name"):
            self._current.inputs.append(
                (
                    values["name"],
                    values.get("value", ""),
                    values.get("type", "text").lower() or "text",
                    "checked" in present,
                )
            )
        elif self._current is not None and tag == "button" and values.get("name"):
            self._current.buttons.append((values["name"], values.get("value", "")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def page_text(html: str, limit: int = 600) -> str:
    """The visible text of a page, squeezed: for error messages."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", html)
    text = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", text).strip()[:limit]


@dataclass
class Landing:
    """Where navigation stopped."""

    url: str
    #: True when a sign-in form was reached and ``allow_login`` was False.
    login_page: bool = False
    logins: int = 0
    consents: int = 0
    #: Offers to create a passkey after a password sign-in, declined with "Not now".
    passkey_prompts: int = 0


class Browser:
    """One user agent: its own cookie jar, no automatic redirects."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.session.headers["Accept"] = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
        self.trail: list[str] = []

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, data: dict[str, str] | None = None) -> requests.Response:
        headers = {}
        if data is not None:
            origin = re.match(r"^[a-z][a-z0-9+.-]*://[^/?#]+", url, re.IGNORECASE)
            if origin:
                headers["Origin"] = origin.group(0)
        response = self.session.request(
            method, url, data=data, headers=headers, allow_redirects=False, timeout=TIMEOUT
        )
        path = url.split("?", 1)[0]
        self.trail.append(f"{method} {path} -> {response.status_code}")
        return response

    def get(self, url: str) -> requests.Response:
        """One GET, redirects not followed."""
        return self._send("GET", url)

    def _fail(self, message: str) -> BrowserlessError:
        return BrowserlessError(f"{message}\n  trail: {' | '.join(self.trail)}")

    def submit(self, page_url: str, form: Form, **overrides: str) -> tuple[str, requests.Response]:
        if form.method != "post":
            raise self._fail(f"form on {page_url} is method={form.method}, expected post")
        action = urljoin(page_url, form.action or page_url)
        return action, self._send("POST", action, form.fields(**overrides))

    def navigate(
        self,
        url: str,
        stop_at: str,
        *,
        email: str = "",
        password: str = "",
        allow_login: bool = True,
    ) -> Landing:
        """GET ``url`` and follow redirects, signing in, declining the passkey offer and
        consenting when asked, until the user agent would be sent to a URL starting with
        ``stop_at`` (which is not requested)."""
        response = self._send("GET", url)
        landing = Landing(url=url)
        for _ in range(MAX_HOPS):
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise self._fail(f"HTTP {response.status_code} from {url} without Location")
                url = urljoin(url, location)
                if url.startswith(stop_at):
                    landing.url = url
                    return landing
                response = self._send("GET", url)
                continue
            if response.status_code != 200:
                raise self._fail(
                    f"HTTP {response.status_code} at {url}: {page_text(response.text)}"
                )
            forms = parse_forms(response.text)
            login = next((f for f in forms if "password" in f.field_names()), None)
            consent = next((f for f in forms if f.has_button("decision", "allow")), None)
            passkey_prompt = next((f for f in forms if f.has_button("choice", "later")), None)
            if login is not None:
                if not allow_login:
                    landing.url, landing.login_page = url, True
                    return landing
                landing.logins += 1
                if landing.logins > 1:
                    raise self._fail(f"sign-in form shown again: {page_text(response.text)}")
                if "csrf_token" not in login.field_names():
                    raise self._fail(f"sign-in form at {url} has no csrf_token")
                url, response = self.submit(url, login, email=email, password=password)
            elif consent is not None:
                landing.consents += 1
                if landing.consents > 1:
                    raise self._fail(f"consent form shown again: {page_text(response.text)}")
                url, response = self.submit(url, consent, decision="allow")
            elif passkey_prompt is not None:
                # A password sign-in is followed by an offer to create a passkey; a user
                # without an authenticator answers "Not now".
                landing.passkey_prompts += 1
                if landing.passkey_prompts > 1:
                    raise self._fail(f"passkey offer shown again: {page_text(response.text)}")
                url, response = self.submit(url, passkey_prompt, choice="later")
            else:
                raise self._fail(
                    f"page at {url} has neither a sign-in nor a consent form: "
                    f"{page_text(response.text)}"
                )
        raise self._fail(f"more than {MAX_HOPS} hops")


def sign_in(
    browser: Browser, authorization_url: str, redirect_uri: str, email: str, password: str
) -> str:
    """Run an authorization request through sign-in (and consent); return the callback URL."""
    landing = browser.navigate(authorization_url, redirect_uri, email=email, password=password)
    return landing.url


def answer_device_request(
    browser: Browser,
    base_url: str,
    user_code: str,
    *,
    email: str,
    password: str,
    decision: str = "approve",
) -> requests.Response:
    """The person's side of the device flow (RFC 8628 3.3): open ``verification_uri_complete``,
    sign in with a password when asked, confirm the filled-in code, then approve or deny."""
    page_url = f"{base_url}/device?user_code={user_code}"
    response = browser.get(page_url)
    if response.status_code in REDIRECT_STATUSES:
        landing = browser.navigate(page_url, f"{base_url}/device", email=email, password=password)
        page_url = landing.url
        response = browser.get(page_url)
    if response.status_code != 200:
        raise browser._fail(f"HTTP {response.status_code} at {page_url}")
    code_form = next(f for f in parse_forms(response.text) if "user_code" in f.field_names())
    review_url, review = browser.submit(page_url, code_form)
    if review.status_code != 200:
        raise browser._fail(f"HTTP {review.status_code} for the code: {page_text(review.text)}")
    answer_form = next(f for f in parse_forms(review.text) if f.has_button("decision", decision))
    _, answered = browser.submit(review_url, answer_form, decision=decision)
    return answered
