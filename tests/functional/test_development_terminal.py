"""`idp serve` in development, as a person at the terminal sees it: one address (the issuer follows
``--port`` when none is set, and a set one on another port gets a loud warning), never
127.0.0.1; readable log lines and no warning about idp's own defaults; the first-admin banner
once the server answers, after the server's start-up lines; every message written without an
SMTP server printed with its link, and listed by `idp outbox [--follow] [--json]`."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from idp import json_logs, serving
from idp.cli import deployment, main
from idp.cli.deployment import BANNER_RULE
from idp.json_logs import REDACTED, TextFormatter
from idp.serving import ServerOptions
from idp.settings import load_settings
from tests.support.browserless import Browser, parse_forms
from tests.support.cli import initialised_cli
from tests.support.events import wait_for
from tests.support.live import IDP_BIN, STOP_TIMEOUT, LiveIdp, free_port, idp_env

CHEAP_ARGON2 = {"IDP_ARGON2_MEMORY_KIB": "1024", "IDP_ARGON2_TIME_COST": "1"}


@dataclass
class Terminal:
    """A development `idp serve` (``tests.support.live``) whose stdout and stderr go to one
    file, as in a terminal."""

    idp: LiveIdp

    @property
    def port(self) -> int:
        return self.idp.port

    @property
    def env(self) -> dict[str, str]:
        return self.idp.env

    @property
    def directory(self) -> Path:
        return self.idp.directory

    def text(self) -> str:
        return self.idp.log_path.read_text(errors="replace")

    def wait_for_text(self, needle: str) -> str:
        wait_for(lambda: needle in self.text(), f"{needle!r} in the terminal:\n{self.text()}")
        return self.text()


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    """`idp serve --port P` on an empty directory with no issuer set, sign-up open."""
    directory = tmp_path_factory.mktemp("terminal")
    port = free_port()
    env = idp_env(directory, "unused") | CHEAP_ARGON2 | {"IDP_SIGNUP_ENABLED": "true"}
    del env["IDP_ISSUER"]
    # The address it must follow: start() waits for discovery there.
    idp = LiveIdp(f"http://localhost:{port}", port, directory, env, directory / "terminal.txt")
    idp.start()
    try:
        serving = Terminal(idp)
        serving.wait_for_text(BANNER_RULE + "\n\n")  # the banner's closing rule
        yield serving
    finally:
        idp.stop()


def test_the_issuer_follows_the_port_and_the_terminal_names_localhost(terminal: Terminal) -> None:
    here = f"http://localhost:{terminal.port}"
    discovery = requests.get(f"{here}/.well-known/openid-configuration", timeout=30).json()
    assert discovery["issuer"] == here
    text = terminal.text()
    assert f"idp is ready at {here}\n" in text
    assert f"  {here}/login/link/" in text  # the first admin's link, on the served port
    # Passkeys cannot work on an IP address (the WSGI server's own "Listening at" line is gone).
    assert "127.0.0.1" not in text


def test_a_host_name_to_listen_on_is_resolved(tmp_path: Path) -> None:
    """``idp serve --host localhost``: granian listens on addresses only, and stopped its start
    on a name with a traceback; the name is resolved (idp.serving ``listening_address``)."""
    port = free_port()
    env = idp_env(tmp_path, f"http://localhost:{port}") | CHEAP_ARGON2
    (tmp_path / "instance").mkdir()
    idp = LiveIdp(f"http://localhost:{port}", port, tmp_path, env, tmp_path / "terminal.txt",
                  host="localhost")  # fmt: skip
    idp.start()  # waits for discovery at http://localhost:PORT
    try:
        text = Terminal(idp).wait_for_text(BANNER_RULE + "\n\n")
    finally:
        idp.stop()
    assert f"idp is ready at http://localhost:{port}\n" in text
    assert "Traceback" not in text


def test_the_banner_follows_the_start_up_lines_and_the_logs_are_readable(
    terminal: Terminal,
) -> None:
    text = terminal.text()
    banner = text.index(BANNER_RULE)
    # The server's start-up lines come before the banner, never after it, where they would
    # scroll it away.
    assert text.index("Spawning worker") < banner
    assert "No admin can sign in yet" in text[banner:]
    assert re.search(r"^\d\d:\d\d:\d\d INFO +_granian: Starting granian", text, re.MULTILINE)
    assert not [line for line in text.splitlines() if line.startswith("{")], "JSON log lines"
    # No warning about idp's own defaults (granian's thread count, for one).
    assert " WARNING " not in text


def sign_up(terminal: Terminal, email: str) -> str:
    base = f"http://localhost:{terminal.port}"
    with Browser() as browser:
        page = browser.session.get(f"{base}/signup", timeout=30)
        (form,) = [f for f in parse_forms(page.text) if "email" in f.field_names()]
        _, answer = browser.submit(f"{base}/signup", form, email=email)
        while answer.is_redirect:
            answer = browser.session.get(
                requests.compat.urljoin(base, answer.headers["Location"]), timeout=30
            )
        return answer.text


def test_mail_without_smtp_is_printed_and_listed_by_idp_outbox(terminal: Terminal) -> None:
    page = sign_up(terminal, "newcomer@example.com")
    # The page does not claim an email went out: it says where the message is.
    assert "No mail server is configured" in page
    assert "idp outbox" in page
    assert "We are emailing" not in page
    printed = terminal.wait_for_text("Mail #1 to newcomer@example.com")
    link = re.search(rf"http://localhost:{terminal.port}/signup/confirm/[\w-]+", printed)
    assert link, printed
    assert "not sent: no mail server is configured" in printed

    # `idp outbox` in-process (CliRunner) on the server's database: the list, with the link.
    runner = CliRunner(env=terminal.env)
    listed = runner.invoke(main, ["outbox", "--json"])
    assert listed.exit_code == 0, listed.output
    (message,) = json.loads(listed.output)
    assert message["recipient"] == "newcomer@example.com"
    assert link.group(0) in message["body"]
    assert link.group(0) in runner.invoke(main, ["outbox"]).output

    follower = terminal.directory / "follow.txt"
    with follower.open("wb") as sink:
        following = subprocess.Popen(
            [str(IDP_BIN), "outbox", "--follow", "--json"], env=terminal.env,
            cwd=terminal.directory, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # The message already there first, then each new one as it is written.
        wait_for(lambda: "newcomer@example.com" in follower.read_text(), "the first message")
        sign_up(terminal, "second@example.com")
        wait_for(lambda: "second@example.com" in follower.read_text(), "the new message")
    finally:
        following.terminate()
        following.wait(timeout=STOP_TIMEOUT)
    lines = [json.loads(line) for line in follower.read_text().splitlines() if line.strip()]
    assert [line["recipient"] for line in lines] == ["newcomer@example.com", "second@example.com"]


def test_a_set_issuer_on_another_port_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`idp serve` in-process with the server itself left out: what it prints before serving.
    Free ports, not 5000 and 5001: `idp serve` first refuses a port in use, and a developer's
    `make run` serves on 5000 while the suite runs."""
    served: list[ServerOptions] = []
    monkeypatch.setattr(serving, "run", lambda _server, options: served.append(options))
    monkeypatch.setattr(json_logs, "configure", lambda *_args: None)
    monkeypatch.setattr(deployment, "announce_when_ready", lambda *_args: None)
    issuer_port, other_port = free_port(), free_port()
    issuer = f"http://localhost:{issuer_port}"
    runner = initialised_cli(tmp_path, IDP_ISSUER=issuer, IDP_LOG_FORMAT=None)
    result = runner.invoke(main, ["serve", "--port", str(other_port)])
    assert result.exit_code == 0, result.output
    assert f"WARNING: the issuer is {issuer}" in result.output
    assert f"listens on port {other_port}" in result.output
    assert f"IDP_ISSUER=http://localhost:{other_port}" in result.output
    assert [options.port for options in served] == [other_port]
    quiet = runner.invoke(main, ["serve", "--port", str(issuer_port)])
    assert quiet.exit_code == 0, quiet.output
    assert "WARNING" not in quiet.output


def test_text_log_lines_are_redacted_like_json_ones() -> None:
    record = logging.LogRecord(
        "idp.test", logging.INFO, __file__, 1, "opened %s", ("/login/link/s3cr3t-value-here",),
        None,
    )  # fmt: skip
    line = TextFormatter().format(record)
    assert "s3cr3t-value-here" not in line
    assert f"/login/link/{REDACTED}" in line
    assert re.match(r"\d\d:\d\d:\d\d INFO +idp.test: opened", line)


def test_a_production_configuration_never_prints_mail_or_text_lines() -> None:
    """A production server's output goes to a log store: no link is printed there."""
    base = {"IDP_SECRET_KEY": "x" * 40, "IDP_LOG_FORMAT": "text"}
    development = load_settings(environ=base)
    production = load_settings(environ=base | {"IDP_PRODUCTION": "true"})
    assert development.prints_mail
    assert not production.prints_mail
    auto = load_settings(environ={"IDP_PRODUCTION": "true", "IDP_SECRET_KEY": "x" * 40})
    assert auto.resolved_log_format(development=True) == "json"
    assert load_settings(environ={}).resolved_log_format(development=False) == "json"
