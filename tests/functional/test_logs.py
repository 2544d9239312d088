"""Structured logs (docs/operations.md, "Logs"): one JSON object per line on stderr, a request id
carried through every line of a request, and no secret in any line.

The scan: a live ``idp serve --production`` with DEBUG logging runs every flow (password + TOTP,
password + backup code, recovery with a backup code, passkey, login link, code exchange, refresh,
introspection, revocation, userinfo, client credentials, failures and a replayed code); every
secret value sent or received on the way is then searched for in the server's whole output,
verbatim and URL-encoded. At DEBUG, Authlib logs every token response it issues (``Issue token
%r``): without the central redaction this test fails.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

import idp
from idp import json_logs
from idp.json_logs import REDACTED, JsonFormatter
from tests.support.apps import live_on
from tests.support.events import wait_for
from tests.support.flow import shown_address
from tests.support.http_flows import RelyingParty, Visitor, expect, query_of
from tests.support.live import LiveIdp, start_live_idp

REDIRECT_URI = "http://localhost:9/callback"
PASSWORD = "correct horse battery staple 42"
METRICS_TOKEN = "log-test-scrape-" + "t" * 40
REQUIRED_FIELDS = {"time", "level", "logger", "message", "pid"}
REQUEST_FIELDS = {"request_id", "method", "endpoint"}
#: Request ids are random hex: a 6-digit TOTP code could occur in one by chance, so the scan
#: leaves them out (they are generated here, never secrets).
REQUEST_ID_VALUE = re.compile(r'"request_id": "[^"]*"')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def debug_idp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveIdp]:
    """A production server logging at DEBUG, its stderr apart from its stdout."""
    directory = tmp_path_factory.mktemp(f"logs-{request.param}")
    env = {"IDP_LOG_LEVEL": "DEBUG", "IDP_PASSKEY_PROMPT": "false",
           "IDP_METRICS_TOKEN": METRICS_TOKEN}  # fmt: skip
    with live_on(request.param, directory, production=True, env=env, separate_stderr=True) as idp:
        yield idp


def _new_user(idp: LiveIdp, label: str) -> str:
    email = f"{label}-{secrets.token_hex(3)}@example.com"
    idp.create_user(email, PASSWORD)
    return email


def _wait_for_next_totp_step(last_code: str, totp: Any) -> str:
    """RFC 6238 5.2 / an accepted step is never accepted again; the enrolment spent
    the current one."""
    deadline = time.monotonic() + 35
    while totp.now() == last_code and time.monotonic() < deadline:
        time.sleep(0.5)
    code: str = totp.now()
    return code


def run_every_flow(idp: LiveIdp) -> set[str]:
    """Every flow idp offers, over HTTP; returns each secret value that went over the wire."""
    seen: set[str] = {PASSWORD}
    registered = idp.create_client(name="Log RP", redirect_uris=[REDIRECT_URI], first_party=True)
    rp = RelyingParty(idp.url, registered["client_id"], registered["client_secret"], REDIRECT_URI)
    visitors: list[Visitor] = []

    def visitor() -> Visitor:
        visitors.append(Visitor(idp.url))
        return visitors[-1]

    # Password + TOTP user: enrol the app (hands out backup codes).
    totp_email = _new_user(idp, "totp")
    enrolling = visitor()
    enrolling.sign_in_with_password(totp_email, PASSWORD)
    totp, backup_codes = enrolling.enrol_totp()
    enrolment_code = totp.now()

    # Passkey user: register on the account page, then sign in through the code flow.
    passkey_email = _new_user(idp, "passkey")
    registering = visitor()
    registering.sign_in_with_password(passkey_email, PASSWORD)
    authenticator = registering.register_passkey()
    browser = visitor()
    authorization = browser.authorize(rp.client_id, REDIRECT_URI)
    browser.get(authorization.location)
    verified = browser.passkey_step(authenticator, authorization.pending_id)
    callback = browser.follow_to(verified, REDIRECT_URI)
    passkey_tokens = rp.exchange(callback, authorization)
    # The spent code again: invalid_grant, and its tokens are revoked (RFC 6749 4.1.2).
    replay = rp.post("/token", {"grant_type": "authorization_code",
                                "code": query_of(callback)["code"], "redirect_uri": REDIRECT_URI,
                                "code_verifier": authorization.verifier})  # fmt: skip
    expect(replay.status_code == 400, f"replayed code: {replay.status_code}")

    # Login link: issued on the command line, confirmed with a POST.
    link_email = _new_user(idp, "link")
    issued = idp.cli("login-link", link_email, "--json")
    link_path = "/login/link/" + issued["url"].rsplit("/", 1)[1]
    seen.update({issued["url"], issued["url"].rsplit("/", 1)[1]})
    opener = visitor()
    opened = opener.post(link_path, data={"csrf_token": opener.csrf_field(link_path)})
    expect(opened.status_code == 302, f"login link: {opened.status_code}")

    # Password + backup code; recovery with another backup code.
    backup = visitor()
    second_step = shown_address(backup.password_step(totp_email, PASSWORD))
    expect(second_step == "/login/second-step", "password step")
    expect(backup.second_step(backup_codes[0], "backup_code").status_code == 302, "backup code")
    recovering = visitor()
    recovered = recovering.post("/login/recover", data={
        "csrf_token": recovering.csrf_field("/login/recover"), "email": totp_email,
        "code": backup_codes[1],
    })  # fmt: skip
    expect(recovered.status_code == 302, f"recovery: {recovered.status_code}")

    # Failures: a wrong password, a wrong TOTP code, a wrong client secret.
    wrong = visitor()
    wrong_password = "not the password " + secrets.token_urlsafe(8)
    expect(wrong.password_step(totp_email, wrong_password).status_code == 401, "wrong password")
    second_step = shown_address(wrong.password_step(totp_email, PASSWORD))
    expect(second_step == "/login/second-step", "password step")
    wrong_code = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    expect(wrong.second_step(wrong_code).status_code == 401, "wrong TOTP code")
    wrong_secret = secrets.token_urlsafe(32)
    seen.add(wrong_secret)
    refused = requests.post(idp.url + "/token", data={"grant_type": "client_credentials"},
                            auth=(rp.client_id, wrong_secret), timeout=30)  # fmt: skip
    expect(refused.status_code == 401, f"wrong client secret: {refused.status_code}")

    # Password + TOTP through the code flow, then every token endpoint.
    signing_in = visitor()
    authorization = signing_in.authorize(rp.client_id, REDIRECT_URI)
    first = signing_in.password_step(totp_email, PASSWORD, authorization.pending_id,
                                     form_path=authorization.location)  # fmt: skip
    expect(shown_address(first) == "/login/second-step", f"password step: {first.status_code}")
    second = signing_in.second_step(_wait_for_next_totp_step(enrolment_code, totp))
    callback = signing_in.follow_to(second, REDIRECT_URI)
    tokens = rp.exchange(callback, authorization)
    rotated = rp.refresh(tokens["refresh_token"])
    bearer = {"Authorization": f"Bearer {rotated['access_token']}"}
    userinfo = requests.get(idp.url + "/userinfo", headers=bearer, timeout=30)
    expect(userinfo.status_code == 200, f"userinfo: {userinfo.status_code}")
    for token in (rotated["access_token"], rotated["refresh_token"]):
        answer = rp.post("/introspect", {"token": token})
        expect(answer.status_code == 200 and answer.json()["active"], "introspection")
    for token in (rotated["refresh_token"], passkey_tokens["access_token"]):
        expect(rp.post("/revoke", {"token": token}).status_code == 200, "revocation")
    expect(rp.client_credentials().status_code == 200, "client credentials")

    for each in visitors:
        each.close()
        seen |= each.seen
    seen |= rp.seen
    seen.update({wrong_password, wrong_code})
    return {value for value in seen if value}


def _assert_every_method_was_counted(idp: LiveIdp) -> None:
    """The same flows, seen by the metrics: each sign-in method and grant type was counted."""
    scrape = requests.get(idp.url + "/metrics", timeout=10,
                          headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text  # fmt: skip
    counted = {
        (s.labels.get("method") or s.labels.get("grant_type"), s.labels["outcome"])
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
        if s.name in ("idp_sign_in_attempts_total", "idp_token_requests_total") and s.value > 0
    }
    for method in ("passkey", "password", "totp", "backup_code", "recovery", "login_link"):
        assert (method, "success") in counted, method
    for failed in (("password", "failure"), ("totp", "failure"),
                   ("authorization_code", "invalid_grant"),
                   ("client_credentials", "invalid_client")):  # fmt: skip
        assert failed in counted, failed
    for grant in ("authorization_code", "refresh_token", "client_credentials"):
        assert (grant, "success") in counted, grant


def _server_output(idp: LiveIdp) -> tuple[str, list[str]]:
    assert idp.stderr_path is not None
    stdout = idp.log_path.read_text(errors="replace")
    stderr = idp.stderr_path.read_text(errors="replace")
    return stdout + "\n" + stderr, stderr.splitlines()


def test_no_secret_token_code_or_password_reaches_the_log(debug_idp: LiveIdp) -> None:
    secrets_seen = run_every_flow(debug_idp)
    _assert_every_method_was_counted(debug_idp)
    debug_idp.stop()  # every worker has written and flushed its last line
    output, lines = _server_output(debug_idp)
    searchable = REQUEST_ID_VALUE.sub('"request_id": ""', output)
    leaked = sorted(
        value
        for value in secrets_seen
        if any(form in searchable for form in {value, quote(value, safe=""), quote_plus(value)})
    )
    assert not leaked, f"{len(leaked)} secret(s) in the server's log, e.g. {leaked[:3]}"
    # The scan looked at a real DEBUG log of those flows: Authlib's token responses were logged,
    # redacted (if this fails, the scan above proved nothing).
    records = [json.loads(line) for line in lines]
    issued = [r for r in records if r["message"].startswith("Issue token")]
    assert issued, "no DEBUG line from Authlib's token endpoint: was the level DEBUG?"
    assert all(REDACTED in r["message"] for r in issued)
    endpoints = {r.get("endpoint") for r in records}
    assert {"oidc.token", "oidc.userinfo", "oidc.introspect", "oidc.revoke", "login.login",
            "login.second_step", "login.passkey_verify", "login.login_link",
            "login.recover"} <= endpoints  # fmt: skip


def test_every_stderr_line_is_one_json_object_with_the_request_fields(debug_idp: LiveIdp) -> None:
    # Runs after the scan (same module-scoped server, now stopped): its whole stderr.
    _, lines = _server_output(debug_idp)
    assert lines
    for line in lines:
        record = json.loads(line)  # one JSON object per line, nothing else on stderr
        assert isinstance(record, dict)
        assert record.keys() >= REQUIRED_FIELDS, line
        if "request_id" in record:
            assert record.keys() >= REQUEST_FIELDS, line
    closing = [json.loads(line) for line in lines if '"duration_ms"' in line]
    assert closing
    assert all({"status", "duration_ms"} <= r.keys() for r in closing)
    # Endpoint names, never raw paths (a login link's path is its secret).
    assert all("/" not in str(r.get("endpoint", "")) for r in closing)


@pytest.fixture(scope="module")
def info_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveIdp]:
    directory = tmp_path_factory.mktemp("logs-request-id")
    with start_live_idp(directory, production=True, separate_stderr=True) as idp:
        yield idp


def _records_with(idp: LiveIdp, request_id: str) -> list[dict[str, Any]]:
    assert idp.stderr_path is not None
    stderr = idp.stderr_path
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        # A worker writes the request's last line (with its duration) right after answering.
        lines = stderr.read_text().splitlines()
        found[:] = [json.loads(x) for x in lines if request_id in x]
        return any("duration_ms" in r for r in found)

    wait_for(logged, f"the log lines of request {request_id}")
    return found


def test_a_well_formed_request_id_is_reused_and_on_every_line_of_its_request(
    info_idp: LiveIdp,
) -> None:
    request_id = "lb-" + secrets.token_hex(8)
    response = requests.post(
        info_idp.url + "/token", data={"grant_type": "client_credentials"},
        headers={"X-Request-Id": request_id}, timeout=30,
    )  # fmt: skip
    assert response.headers["X-Request-Id"] == request_id
    records = _records_with(info_idp, request_id)
    closing = [r for r in records if "duration_ms" in r]
    assert len(closing) == 1
    assert closing[0] | {"request_id": request_id, "method": "POST", "endpoint": "oidc.token",
                         "status": 401} == closing[0]  # fmt: skip
    assert all(r["request_id"] == request_id for r in records)


@pytest.mark.parametrize(
    "malformed",
    ["short", "has space inside it", "x" * 129, 'quote"injection-attempt', "new\\nline-forged"],
)
def test_a_malformed_request_id_is_replaced(info_idp: LiveIdp, malformed: str) -> None:
    response = requests.get(
        info_idp.url + "/.well-known/openid-configuration",
        headers={"X-Request-Id": malformed}, timeout=30,
    )  # fmt: skip
    generated = response.headers["X-Request-Id"]
    assert generated != malformed
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert _records_with(info_idp, generated)
    assert info_idp.stderr_path is not None
    assert malformed not in info_idp.stderr_path.read_text()


def test_the_application_logs_and_finds_its_pages_as_idp(app: Flask) -> None:
    """The factory lives in idp.app; the application is named for the package all the same, so
    its own lines (an unhandled error's among them) carry ``"logger": "idp"`` and its templates
    and static files are the package's."""
    assert app.name == "idp"
    assert app.logger.name == "idp"
    assert app.root_path == str(Path(idp.__file__).parent)


def test_a_request_refused_before_any_view_still_gets_its_id_and_count(app: Flask) -> None:
    from idp import metrics

    before = metrics.exposition()[0].decode()
    response = app.test_client().post("/login", data={"email": "a@example.com", "password": "x"})
    assert response.status_code == 400  # no CSRF token: refused by a hook, not by the view
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-Id"])
    line = 'idp_http_requests_total{endpoint="login.login",method="POST",status="400"}'

    def count(text: str) -> float:
        found = [x for x in text.splitlines() if x.startswith(line)]
        return float(found[0].split()[-1]) if found else 0.0

    assert count(metrics.exposition()[0].decode()) == count(before) + 1


# -- the redaction itself, line by line ---------------------------------------------------------
def _format(app: Flask, message: str, *args: Any, **request: Any) -> str:
    with app.test_request_context(**request):
        app.preprocess_request()  # idp.observability registers this request's secrets
        record = logging.LogRecord("test", logging.INFO, __file__, 1, message, args or None, None)
        return JsonFormatter().format(record)


def test_a_logged_token_request_body_is_redacted(app: Flask) -> None:
    code, verifier, secret = (secrets.token_urlsafe(32) for _ in range(3))
    body = f"grant_type=authorization_code&code={code}&code_verifier={verifier}"
    line = _format(
        app, "token request body: %s", body, path="/token", method="POST", data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": "Basic " + base64.b64encode(f"c:{secret}".encode()).decode()},
    )  # fmt: skip
    for value in (code, verifier, secret):
        assert value not in line
    assert "grant_type=authorization_code" in json.loads(line)["message"]


def test_secret_values_of_the_request_are_redacted_wherever_they_appear(app: Flask) -> None:
    password = "a password with spaces & symbols " + secrets.token_urlsafe(6)
    line = _format(
        app, "oops: %r / %s", ("user typed", password), quote_plus(password), path="/userinfo",
        method="POST", data={"email": "a@example.com", "password": password},
    )  # fmt: skip
    assert password not in line
    assert quote_plus(password) not in line


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("Issue token {'access_token': 'eyJhbGciOi.eyJzdWIiOi.c2ln', 'refresh_token': 'r3fr3sh'}",
         "r3fr3sh"),
        ("GET /authorize/continue?code=abcdef123456&state=xyz", "abcdef123456"),
        ("callback http://rp.example/cb?code=c0d3c0d3c0d3 failed", "c0d3c0d3c0d3"),
        ('{"password": "hunter2hunter2"}', "hunter2hunter2"),
        ("Authorization: Bearer opaque-bearer-value", "opaque-bearer-value"),
        ("connecting to postgresql://idp:dbpassw0rd@db/idp", "dbpassw0rd"),
        ("client_secret=s3cr3t-value-here", "s3cr3t-value-here"),
        ('127.0.0.1 - "GET /login/link/L1nkS3cr3tValue HTTP/1.1" 200', "L1nkS3cr3tValue"),
        ('"POST /invite/Inv1teS3cr3t HTTP/1.1"', "Inv1teS3cr3t"),
        ("id token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"),
    ],
)  # fmt: skip
def test_secret_shapes_are_redacted_outside_a_request(message: str, secret: str) -> None:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)
    assert secret not in JsonFormatter().format(record)


def test_dict_arguments_are_redacted_before_formatting() -> None:
    token = {"token_type": "Bearer", "access_token": "opaque", "refresh_token": "refresh-value"}
    record = logging.LogRecord("authlib", logging.DEBUG, __file__, 1, "Issue token %r to %r",
                               (token, "client"), None)  # fmt: skip
    line = json.loads(JsonFormatter().format(record))
    assert "refresh-value" not in line["message"]
    assert "opaque" not in line["message"]
    assert line["message"].endswith("to 'client'")


def test_secrets_of_the_answer_are_redacted_from_lines_written_after_it(app: Flask) -> None:
    """The values are collected when a line is written (idp.observability.RequestSecrets), not
    when the request starts: a line after the answer still knows the answer's secrets."""
    opaque = secrets.token_urlsafe(24)
    with app.test_request_context(path="/token", method="POST"):
        app.preprocess_request()
        app.process_response(app.response_class(
            json.dumps({"access_token": opaque}), mimetype="application/json"))  # fmt: skip
        record = logging.LogRecord("test", logging.INFO, __file__, 1, "after: %s", (opaque,), None)
        line = JsonFormatter().format(record)
    assert opaque not in line
    assert REDACTED in line


# -- the closing line's shorter way (idp.json_logs.write_closing_line) ----------------------------
@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger that ends in one StreamHandler with JsonFormatter, as ``configure`` leaves it."""
    stream = io.StringIO()
    logger = logging.getLogger(f"idp.test.closing.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger, stream
    logger.handlers.clear()


def _only(logger: logging.Logger, stream: io.StringIO) -> None:
    # pytest's log capture adds its handlers while each test runs: the logger gets only ours.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]


def test_the_closing_line_written_directly_is_the_line_of_its_record(
    json_logger: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = json_logger
    _only(logger, stream)
    fields = {"request_id": "ab" * 16, "method": "POST", "endpoint": "oidc.token"}
    instant = datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)
    frozen = type("Frozen", (datetime,), {"now": classmethod(lambda cls, tz=None: instant)})
    monkeypatch.setattr(json_logs, "datetime", frozen)
    assert json_logs.write_closing_line(logger, "POST oidc.token 200", fields, 200, 1.25)
    direct = stream.getvalue()
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "%s %s %d", ("POST", "oidc.token", 200), None,
        extra={"status": 200, "duration_ms": 1.25, "plain": True, "request_fields": fields},
    )  # fmt: skip
    record.created = instant.timestamp()
    assert direct == JsonFormatter().format(record) + "\n"


def test_the_closing_line_takes_the_usual_way_past_a_filter_or_a_second_handler(
    json_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_logger
    _only(logger, stream)
    fields = {"request_id": "ab" * 16, "method": "GET", "endpoint": "oidc.userinfo"}
    logger.addFilter(lambda record: True)
    assert not json_logs.write_closing_line(logger, "GET oidc.userinfo 200", fields, 200, 1.0)
    logger.filters.clear()
    second = logging.StreamHandler(io.StringIO())
    logger.addHandler(second)
    assert not json_logs.write_closing_line(logger, "GET oidc.userinfo 200", fields, 200, 1.0)
    assert stream.getvalue() == ""
