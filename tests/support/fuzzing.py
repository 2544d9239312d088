"""Generated input for the property-based tests of idp's public endpoints (hypothesis), and the
properties every answer must have whatever it was sent.

Values are the odd ones a parser trips on: NUL and other controls, bidirectional and invisible
characters, lone surrogates (percent-encoded as the UTF-8 of no character, RFC 3629 3), bytes that
are no UTF-8 at all, huge values, numbers in other digits, URLs pointing elsewhere, and a canary of
HTML's special characters that must never come back unescaped. A request is a list of pairs, so a
parameter may be repeated, and its body may be a form, JSON, or a form under the wrong type.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any
from urllib.parse import quote, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.sql import Executable
from werkzeug.test import TestResponse

from idp.extensions import db

#: Every property-based test: the same examples in every run (``derandomize``), none written to an
#: example database, no per-example deadline (a shared 2-core machine is no place for one).
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: HTML's special characters around a word no page contains: it must never come back as it was
#: sent, in a page or a header.
CANARY = "<fz\"q'&>"
CANARY_WORD = "<fz"
FORM = "application/x-www-form-urlencoded"
#: RFC 6749 5.2: an error description holds %x20-21 / %x23-5B / %x5D-7E only.
DESCRIPTION = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


class Raw(str):
    """A value already percent-encoded, sent as it is (bytes that are no UTF-8)."""


RAW_VALUES = (
    Raw("%FF%FE"),  # no UTF-8
    Raw("%C0%AF"),  # an overlong "/" (RFC 3629 3)
    Raw("%ED%A0%80"),  # a lone high surrogate
    Raw("%ED%BF%BF%00"),  # a lone low surrogate, then NUL
    Raw("a%"),  # a truncated escape
    Raw("%zz"),
)
ODD_VALUES = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\r\nX-Injected: yes",
    "\u202eevil\u202c",
    "\ufeff\u200b",
    "\U0001d518\U0001d52b\U0001d526",
    "İß\u01c5",
    "\uffff\ufffe",
    "²³",
    "٣",
    "-1",
    "9" * 40,
    "1e999",
    "null",
    "[]",
    '{"$ne": null}',
    "../../etc/passwd",
    "//evil.example/",
    "/\\evil.example/",
    "/\t/evil.example/",
    "https:evil.example",
    "/\uff0f\uff0fevil.example",
    "https://evil.example/cb",
    "javascript:alert(1)",
    "openid openid",
    "openid\tprofile",
    CANARY,
    "A" * 5000,
)


class Sized(str):
    """``length`` copies of ``character`` where the value is sent, and a short name of itself
    elsewhere: hypothesis shows every value of a failing example, and a megabyte helps nobody."""

    full: str

    def __new__(cls, character: str, length: int) -> Sized:
        value = super().__new__(cls, f"<{length} x {character}>")
        value.full = character * length
        return value


#: Longer than any parameter idp keeps, and a body over the 1 MiB limit (``MAX_CONTENT_LENGTH``):
#: one of the odd values each, so that few requests carry them and the run stays short.
HUGE = Sized("B", 70_000)
OVERSIZED = Sized("C", 1024 * 1024 + 1)


def _words(count: int) -> Sized:
    words = Sized("w", count)
    words.full = " ".join(format(number, "x") for number in range(count))
    return words


#: Distinct words, more than one statement binds (PostgreSQL: 65,535 parameters): a field read as
#: a list (a group's new members) must be cut before it reaches a query.
MANY_WORDS = _words(70_000)


def _noise(length: int) -> Sized:
    noise = Sized("n", length)
    blocks = itertools.accumulate(range(length // 64 + 1), lambda d, n: sha256(d + b"%d" % n)
                                  .digest(), initial=b"")  # fmt: skip
    noise.full = "".join(sha256(block).hexdigest() for block in blocks)[:length]
    return noise


#: Text no compression shrinks: a refusal that names it whole, shown after a redirect from the
#: (compressed) session cookie, takes the cookie past what a browser keeps.
NOISE = _noise(6_000)

#: Values the endpoints know, so that a fuzzed parameter also takes the branches they open.
PROTOCOL_WORDS = (
    "openid", "code", "query", "form_post", "fragment", "none", "login", "consent",
    "select_account", "S256", "plain", "0", "access_token", "refresh_token", "id_token",
    "approve", "deny", "yes", "totp", "backup_code", "urn:idp:acr:mfa", "phr",
)  # fmt: skip
_characters = st.characters(exclude_categories=())  # surrogates and controls included
odd_text = st.text(_characters, max_size=24)


def values() -> st.SearchStrategy[str]:
    """One parameter's value: odd, raw, a protocol word, generated, canary-carrying, rarely huge."""
    return st.one_of(
        st.sampled_from((*ODD_VALUES, HUGE, OVERSIZED, MANY_WORDS, NOISE)),
        st.sampled_from(PROTOCOL_WORDS),
        st.sampled_from(RAW_VALUES),
        odd_text,
        st.builds(lambda a, b: a + CANARY + b, odd_text, odd_text),
    )


def mutations(names: Sequence[str], max_size: int = 3) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Fuzzed pairs for ``names`` (and a name of the fuzzer's), a name perhaps more than once."""
    name = st.one_of(st.sampled_from(tuple(names)), odd_text)
    return st.lists(st.tuples(name, values()), max_size=max_size)


def encode(pairs: Sequence[tuple[str, str]]) -> str:
    """``application/x-www-form-urlencoded`` of ``pairs``; a surrogate is encoded as UTF-8 would
    encode its code point, which no decoder accepts."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in pairs)


def _quoted(value: str) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Sized):
        return value.full  # one unreserved character (RFC 3986 2.3), repeated
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


#: How a body is sent: a form as it should be, or one of the ways clients get it wrong.
BODY_KINDS = ("form",) * 5 + ("json", "text", "none-type", "multipart")


def body(pairs: Sequence[tuple[str, str]], kind: str) -> dict[str, Any]:
    """Keyword arguments of ``FlaskClient.open`` that send ``pairs`` as a ``kind`` body."""
    encoded = encode(pairs).encode()
    if kind == "form":
        return {"data": encoded, "content_type": FORM}
    if kind == "json":
        safe = {
            name: (value.full if isinstance(value, Sized) else value)
            .encode("utf-8", "surrogatepass")
            .decode("utf-8", "replace")
            for name, value in pairs
        }
        return {"data": json.dumps(safe), "content_type": "application/json"}
    if kind == "text":
        return {"data": encoded, "content_type": "text/plain"}
    if kind == "multipart":
        return {"data": encoded, "content_type": "multipart/form-data; boundary=fz"}
    return {"data": encoded}


def basic(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: each part form-encoded, then Basic (RFC 7617)."""
    raw = f"{_quoted(client_id)}:{_quoted(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


_addresses = itertools.count(1)


def fresh_address() -> dict[str, str]:
    """A client address of its own for each request: the per-address budgets and failure
    limits are tested elsewhere, and here they would turn every later request into a 429."""
    n = next(_addresses)
    return {"REMOTE_ADDR": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"}


def run_examples(test: Callable[..., None], examples: int, *args: Any) -> None:
    """Run the ``@given`` function ``test`` on ``examples`` examples (``FUZZ_SETTINGS``), with
    ``args`` before the generated arguments (the scene, and the tally its answers are counted
    in: hypothesis runs a test once per example, so what all of them reached is checked after)."""
    settings(FUZZ_SETTINGS, max_examples=examples)(test)(*args)


def run_given(
    body: Callable[..., None],
    examples: int,
    strategies: dict[str, st.SearchStrategy[Any]],
    *args: Any,
) -> None:
    """``run_examples`` of a test made here, ``body`` given ``strategies``: hypothesis takes a
    test's settings once, so a test that runs more than once in a process (once per database)
    needs a new one each time."""
    run_examples(given(**strategies)(body), examples, *args)


# -- properties ------------------------------------------------------------------------------------
@dataclass
class Tally:
    """What the answers of one endpoint were, to prove the examples reached where they meant to."""

    counts: dict[str, int] = field(default_factory=dict)
    #: The first answer of each kind, for answers that must not vary.
    documents: dict[str, bytes] = field(default_factory=dict)

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)

    @property
    def total(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("status "))


def check_answer(response: TestResponse, *, allowed_hosts: Sequence[str] = ()) -> None:
    """What holds of every answer: no server error, no traceback, no header carrying a line
    break, no canary unescaped in the body or a header, no cookie a browser would drop (over
    4,096 bytes, RFC 6265 6.1: the session's CSRF token would go with it), and a redirect only to
    idp itself or to one of ``allowed_hosts`` (the registered URIs' origins).

    A JSON answer is data, not a page: a name the user gave comes back in it as they typed it
    (the passkey options' ``displayName``), so it must only never be read as a page (its type,
    and ``nosniff``)."""
    assert response.status_code < 500, (response.status_code, response.get_data()[:500])
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if response.mimetype == "application/json":
        assert response.headers.get("X-Content-Type-Options") == "nosniff", response.headers
    else:
        assert CANARY_WORD not in text, f"input reflected unescaped: {text[:300]!r}"
    for name, value in response.headers.items():
        assert "\r" not in value, (name, value)
        assert "\n" not in value, (name, value)
        assert CANARY_WORD not in value, (name, value)
    for cookie in response.headers.getlist("Set-Cookie"):
        assert len(cookie) <= 4096, f"a cookie of {len(cookie)} bytes: {cookie[:100]!r}"
    location = response.headers.get("Location")
    if location is not None:
        # As a browser reads it (WHATWG URL): a backslash is a slash, tabs and line breaks go.
        location = location.replace("\\", "/").replace("\t", "")
        target = urlsplit(location)
        origin = f"{target.scheme}://{target.netloc}"
        assert (not target.scheme and not target.netloc) or origin in (
            "http://localhost",
            *allowed_hosts,
        ), f"redirect to {location!r}"
        assert not location.startswith("//"), location


def json_error(response: TestResponse, registered: frozenset[str]) -> str:
    """The ``error`` of a JSON error answer, one of the ``registered`` codes."""
    assert response.mimetype == "application/json", (response.status_code, response.mimetype)
    document = response.get_json()
    assert isinstance(document, dict), document
    error = document.get("error")
    assert error in registered, (response.status_code, document)
    description = document.get("error_description", "")
    assert isinstance(description, str)
    assert DESCRIPTION.fullmatch(description), description
    return str(error)


# -- the signed-in surfaces: ids, requests and the rows they must leave alone ------------------
def forged(names: Sequence[str]) -> st.SearchStrategy[str]:
    """An id in a path or a field: one of the scene's ``names`` (the user's own object, another
    user's, one that never existed, each resolved by the test to its real id) or a fuzzed value."""
    return st.one_of(st.sampled_from(tuple(names)), st.sampled_from(tuple(names)), values())


def segment(value: str) -> str:
    """``value`` as one path segment: percent-encoded (a raw value as it is), cut to 3,000
    characters so that the request line stays under the server's limit."""
    if isinstance(value, Raw):
        return str(value)
    return quote((value.full if isinstance(value, Sized) else value)
                 .encode("utf-8", "surrogatepass"), safe="")[:3000]  # fmt: skip


def send(
    http: FlaskClient,
    path: str,
    pairs: Sequence[tuple[str, str]],
    http_method: str,
    kind: str = "form",
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    """Send ``pairs`` to ``path`` (in the query of a GET or HEAD, else as a ``kind`` body) with
    the ``cookie`` of a signed-in browser, and check what holds of every answer."""
    options: dict[str, Any] = (
        {"query_string": encode(pairs)} if http_method in ("GET", "HEAD") else body(pairs, kind)
    )
    sent = {**(headers or {}), **({"Cookie": cookie} if cookie else {})}
    response = http.open(
        path, method=http_method, headers=sent, environ_base=fresh_address(), **options
    )
    check_answer(response)
    return response


def rows_of(app: Flask, *statements: Executable) -> list[list[tuple[Any, ...]]]:
    """What ``statements`` (SELECTs) read now, to compare before and after: an object a request
    must not touch (another user's passkey, session, grant or group membership) is unchanged
    only if its rows read the same, every column of them."""
    with app.app_context():
        read = [[tuple(row) for row in db.session.execute(s).all()] for s in statements]
        db.session.remove()
        return read


def header_value(value: str) -> str:
    """``value`` as a header can carry it (printable ASCII: a client sends no line break), cut
    to 8,000 characters; "x" when nothing is left."""
    text = value.full if isinstance(value, Sized) else value
    return "".join(c for c in text[:8000] if " " <= c <= "~") or "x"


def csrf_refused(response: TestResponse) -> bool:
    """Whether the answer is the refusal of a form without its CSRF token (or one too large to
    read at all, 413, before any check)."""
    if response.status_code == 413:
        return True
    return response.status_code == 400 and (
        "This form expired or was sent from another page" in response.get_data(as_text=True)
    )
