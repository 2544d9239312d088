"""docs/integrating.md runs as written: its Python examples, against a live idp.

The convention, for whoever adds an example to docs/integrating.md:

- Every ```python block is run, in the order of the page, each on its own (a fresh namespace),
  unless the line just above its opening fence is ``<!-- not run: REASON -->``.
- Before it runs, ``https://id.example.com`` becomes the live idp's issuer and
  ``https://app.example.com`` the origin of the relying party (a ``http://localhost`` port that
  only the test client answers on). A block reads its client from the environment, as a real
  application would: ``IDP_CLIENT_ID`` and ``IDP_CLIENT_SECRET`` (a confidential
  ``client_secret_basic`` client registered for ``https://app.example.com/oidc/callback`` and
  the post-logout address ``https://app.example.com/``), and ``APP_SECRET_KEY``.
- A line starting with ``# ... after the redirect back`` pauses the block: the part above it
  runs, then a user signs in (password, consent) at the authorization URL the block built (a
  string in its namespace that starts with idp's authorization endpoint), and the rest runs with
  ``callback_url`` set to the full URL idp sent the browser back to.
- A block that leaves a Flask application named ``app`` is then used as a browser would: its
  ``/login`` must redirect to idp, the user signs in there, and the application must accept the
  callback (any answer below 400).

A block that raises fails the test, with the block's first line in the message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from idp import create_app
from idp.extensions import db
from tests.conftest import FAST_ARGON2
from tests.support.browserless import Browser, sign_in
from tests.support.factories import create_client, create_user
from tests.support.live import LiveIdp, free_port

pytestmark = pytest.mark.interop

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrating.md"
DOC_ISSUER = "https://id.example.com"
DOC_APP = "https://app.example.com"
NOT_RUN = re.compile(r"<!--\s*not run:\s*\S.*-->")
PAUSE = "# ... after the redirect back"
EMAIL = "snippets@example.com"
PASSWORD = "correct horse battery staple 42"


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    code: str

    @property
    def label(self) -> str:
        first = next((text for text in self.code.splitlines() if text.strip()), "")
        return f"docs/integrating.md:{self.line} ({first.strip()})"


def python_blocks(text: str) -> list[Block]:
    """Every ```python block of ``text`` not marked ``<!-- not run: ... -->`` above its fence."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index
            end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
            marked = start > 0 and NOT_RUN.fullmatch(lines[start - 1].strip())
            if not marked:
                blocks.append(Block(start + 1, "\n".join(lines[start + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


def test_the_convention_finds_blocks_and_honours_the_marker() -> None:
    page = (
        "```python\nrun = 1\n```\n<!-- not run: needs a browser -->\n```python\nskip = 1\n```\n"
        "```sh\nnot python\n```\n```python\nalso = 2\n```\n"
    )
    assert [block.code for block in python_blocks(page)] == ["run = 1\n", "also = 2\n"]
    assert python_blocks(DOC.read_text()), "docs/integrating.md has no Python example"


@dataclass
class World:
    idp: LiveIdp
    app_origin: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def world(live_idp: LiveIdp) -> Iterator[World]:
    app_origin = f"http://localhost:{free_port()}"
    # The user and the client written in-process into the live idp's database (with its secret
    # key and issuer): two `idp` commands fewer to wait for.
    writer = create_app({
        "issuer": live_idp.url, "secret_key": live_idp.env["IDP_SECRET_KEY"],
        "database_url": live_idp.env["IDP_DATABASE_URL"],
        "instance_path": live_idp.env["IDP_INSTANCE_PATH"], **FAST_ARGON2,
    })  # fmt: skip
    create_user(writer, EMAIL, PASSWORD, name="Snippet Reader")
    client = create_client(
        writer, name="Docs example", redirect_uris=[f"{app_origin}/oidc/callback"],
        post_logout_redirect_uris=[f"{app_origin}/"], first_party=False,
    )  # fmt: skip
    with writer.app_context():
        db.engine.dispose()
    assert client.client_secret is not None
    env = {
        "IDP_CLIENT_ID": client.client_id,
        "IDP_CLIENT_SECRET": client.client_secret,
        "APP_SECRET_KEY": "docs-example-session-key-" + "x" * 20,
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield World(live_idp, app_origin, env)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def authorization_url(world: World, namespace: dict[str, Any]) -> str:
    endpoint = world.idp.discovery()["authorization_endpoint"]
    found = [v for v in namespace.values() if isinstance(v, str) and v.startswith(endpoint + "?")]
    assert found, f"the block built no authorization URL (one starting with {endpoint}?)"
    return found[-1]


def drive_flask_app(world: World, app: Flask, label: str) -> None:
    """``/login`` on the application, sign-in at idp, the callback back to the application."""
    browser = app.test_client()
    start = browser.get("/login", base_url=world.app_origin)
    assert start.status_code in (301, 302, 303, 307), f"{label}: /login answered {start.status}"
    location = start.headers["Location"]
    assert location.startswith(world.idp.url), f"{label}: /login went to {location}"
    with Browser() as user:
        callback = sign_in(user, location, f"{world.app_origin}/oidc/callback", EMAIL, PASSWORD)
    parts = urlsplit(callback)
    answer = browser.get(parts.path, query_string=parts.query, base_url=world.app_origin)
    assert answer.status_code < 400, f"{label}: the callback answered {answer.status}"


def run_block(world: World, block: Block) -> None:
    code = block.code.replace(DOC_ISSUER, world.idp.url).replace(DOC_APP, world.app_origin)
    before, pause, after = code.partition(PAUSE)
    namespace: dict[str, Any] = {"__name__": f"integrating_md_line_{block.line}"}
    exec(compile(before, block.label, "exec"), namespace)  # noqa: S102 - the docs' own examples
    if pause:
        url = authorization_url(world, namespace)
        with Browser() as user:
            namespace["callback_url"] = sign_in(
                user, url, f"{world.app_origin}/oidc/callback", EMAIL, PASSWORD
            )
        # The rest, with its own first line (the comment) kept so that line numbers stay close.
        exec(compile(pause + after, block.label, "exec"), namespace)  # noqa: S102
    app = namespace.get("app")
    if isinstance(app, Flask):
        drive_flask_app(world, app, block.label)


def test_every_python_example_of_the_integration_guide_runs(world: World) -> None:
    blocks = python_blocks(DOC.read_text())
    for block in blocks:
        try:
            run_block(world, block)
        except Exception as error:
            raise AssertionError(
                f"{block.label} failed: {type(error).__name__}: {error}"
            ) from error
