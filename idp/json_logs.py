"""Structured logs: one JSON object per line on stderr, secrets redacted in one place; in
development (``idp serve`` without ``--production``, setting ``log_format``) the same fields as one
human-readable line each.

Every line carries ``time``, ``level``, ``logger``, ``message`` and ``pid``; lines written while a
request is handled also carry its ``request_id``, ``method`` and ``endpoint`` (the Flask endpoint
name, never the raw path: ``/login/link/<secret>`` holds a secret), and the line that closes a
request adds ``status`` and ``duration_ms``.

No secret reaches a line (docs/operations.md, "Logs"). ``redact`` runs over the message and the
traceback of every record, whoever logged it (idp, Authlib, the WSGI server):

- the arguments of a record are copied with the values of secret-named keys replaced, so a dict
  such as Authlib's ``Issue token %r`` (access, refresh and ID token) prints redacted;
- in the text: values after secret-named keys (``code=...``, ``"password": "..."``), credentials
  after ``Bearer``/``Basic``, anything shaped like a JWT, URL query strings, passwords in URLs;
- every secret value the current request carried or received (form and query fields with secret
  names, the Authorization header, cookies, login-link path parameters, tokens and codes in the
  response), verbatim and URL-encoded, collected by idp.observability when a redacted line is
  written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

#: A field whose name contains one of these words holds a secret (or may: ``code`` in
#: ``code_challenge`` is not one, and is redacted all the same).
_SECRET_WORDS = (
    r"password|passwd|secret|token|code|verifier|assertion|otp|cookie|session|authorization"
    r"|credential|signature|api[_-]?key"
)
SECRET_NAME = re.compile(f"(?i)({_SECRET_WORDS})")
_KEY = rf"[\w.-]*(?:{_SECRET_WORDS})[\w.-]*"
_TEXT_PATTERNS: list[tuple[Callable[[str], object], re.Pattern[str], str]] = [
    # (a cheap test that the pattern can match at all, the pattern, its replacement): most lines
    # pass every test without running a regular expression.
    (re.compile(r"(?i)bearer|basic").search,
     re.compile(r"(?i)\b(Bearer|Basic)\s+[\w.~+/=-]+"), r"\1 " + REDACTED),
    # JWS compact serialisation (RFC 7515 7.1): access tokens (RFC 9068), ID tokens, assertions.
    (lambda text: "eyJ" in text, re.compile(r"eyJ[\w-]*\.[\w-]+\.[\w-]*"), REDACTED),
    # "key": "value" and 'key': 'value' (JSON, Python reprs of dicts).
    (SECRET_NAME.search,
     re.compile(r"(?i)([\"']" + _KEY + r"[\"']\s*:\s*)([\"'])(?:\\.|(?!\2).)*\2"),
     r"\1\2" + REDACTED + r"\2"),
    # key=value (form bodies, query strings, reprs of objects), key: value (headers).
    (SECRET_NAME.search,
     re.compile(r"(?i)(\b" + _KEY + r"\s*[=:]\s*)(?![\"'\[{(])[^\s&,;\"')\]}]+"),
     r"\1" + REDACTED),
    # Query strings: authorization requests and callbacks carry codes, states and hints.
    (lambda text: "?" in text,
     re.compile(r"((?:https?://|/)[^\s?#\"'<>]*)\?[^\s#\"'<>]+"), r"\1?" + REDACTED),
    # Paths whose last segment is a one-time secret (a server's access log has no request
    # context to take the value from).
    (lambda text: "/login/link/" in text or "/invite/" in text or "/signup/confirm/" in text,
     re.compile(r"(/(?:login/link|invite|signup/confirm)/)[^\s/?#\"'<>]+"), r"\1" + REDACTED),
    # scheme://user:password@host (database, Redis and SMTP URLs).
    (lambda text: "://" in text and "@" in text,
     re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]+@"), r"\1:" + REDACTED + "@"),
]  # fmt: skip
#: Values shorter than this are not searched for verbatim (a 1-character "secret" would blank
#: every line); a TOTP code has 6 digits.
MIN_SECRET_LENGTH = 6


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) < MIN_SECRET_LENGTH:
            continue
        for form in {value, quote(value, safe=""), quote_plus(value), quote(value)}:
            if form in text:
                text = text.replace(form, REDACTED)
    for applies, pattern, replacement in _TEXT_PATTERNS:
        if applies(text):
            text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any, depth: int = 0) -> Any:
    """A copy of a log argument with the values of secret-named keys replaced."""
    if depth > 5:
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and SECRET_NAME.search(key)
            else redact_value(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, depth + 1) for item in value)
    return value


#: The log fields and secrets of the request this context serves outside Flask's request context
#: (the token side's direct endpoints, idp.web.direct); None otherwise.
DIRECT_REQUEST: ContextVar[tuple[dict[str, Any], Iterable[str]] | None] = ContextVar(
    "idp_direct_request", default=None
)


def _request_fields() -> tuple[dict[str, Any], Iterable[str]]:
    """The current request's log fields and secrets, when a request is being handled."""
    direct = DIRECT_REQUEST.get()
    if direct is not None:
        return direct
    try:
        from flask import g, has_request_context, request
    except ImportError:  # pragma: no cover - Flask is a dependency; this module must not fail
        return {}, ()
    if not has_request_context():
        return {}, ()
    fields = {
        "request_id": g.get("request_id"),
        "method": request.method if request.method in HTTP_METHODS else "OTHER",
        "endpoint": request.endpoint or "none",
    }
    return fields, g.get("log_secrets", ())


class JsonFormatter(logging.Formatter):
    """One JSON object per record, redacted (see the module docstring)."""

    #: ``json.dumps(..., default=str, ensure_ascii=False)``, its encoder made once.
    encoder = json.JSONEncoder(default=str, ensure_ascii=False)

    def format(self, record: logging.LogRecord) -> str:
        return self.encoder.encode(self.fields(record))

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The line's fields, redacted: what both formats print."""
        # A request's closing line brings its request's fields (idp.observability); it has
        # nothing to redact, so it needs no secrets either.
        fields: dict[str, Any] | None = getattr(record, "request_fields", None)
        secrets: Iterable[str] = ()
        if fields is None:
            fields, secrets = _request_fields()
        # The closing line of a request is made of endpoint names and numbers only (``plain``:
        # idp.observability), and it is written for every request: nothing in it to redact.
        plain = getattr(record, "plain", False)
        if record.args and not plain:
            record.args = redact_value(record.args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the line
            message = f"{record.msg} {record.args}"
        line = _line(
            datetime.fromtimestamp(record.created, UTC), record.levelname, record.name,
            message if plain else redact(message, secrets), record.process or os.getpid(), fields,
        )  # fmt: skip
        attributes = record.__dict__  # what ``extra`` set (a LogRecord has none of these itself)
        for key in ("status", "duration_ms", "request_id"):
            if key in attributes:
                line[key] = attributes[key]
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            line["exception"] = redact(text, secrets)
        elif record.stack_info:
            line["stack"] = redact(record.stack_info, secrets)
        return line


def write_closing_line(
    logger: logging.Logger,
    message: str,
    request_fields: dict[str, Any],
    status: int,
    duration_ms: float,
) -> bool:
    """Write a request's closing INFO line (idp.observability) as ``logger`` would, without the
    ``LogRecord`` and the handler machinery around it, when ``logger`` ends in nothing but the
    one JSON handler on stderr that ``configure`` installs: the line is the same characters
    (tests/functional/test_logs.py), for about half the cost of a request's logging. False, and
    nothing written, for any other configuration (a test's capture, another handler, a filter):
    the caller logs the line the usual way then."""
    handler = _only_json_handler(logger)
    if handler is None:
        return False
    formatter = cast(JsonFormatter, handler.formatter)
    fields = _line(datetime.now(UTC), "INFO", logger.name, message, os.getpid(), request_fields)
    fields["status"], fields["duration_ms"] = status, duration_ms  # as ``fields`` adds them
    line = formatter.encoder.encode(fields)
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    except Exception:  # the usual way then, whose handleError reports it; never the request
        return False
    finally:
        handler.release()
    return True


def _only_json_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The handler an INFO line of ``logger`` reaches when it is the only one, a plain
    ``StreamHandler`` with ``JsonFormatter`` and no filter anywhere on the way; else None."""
    found: logging.StreamHandler[Any] | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or type(handler.formatter) is not JsonFormatter
                or handler.filters
                or handler.level > logging.INFO
            ):
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def _line(
    at: datetime, level: str, logger: str, message: str, pid: int, fields: dict[str, Any]
) -> dict[str, Any]:
    """The fields every line starts with, in their order (the module docstring)."""
    return {
        "time": at.isoformat(timespec="milliseconds"), "level": level, "logger": logger,
        "message": message, "pid": pid, **fields,
    }  # fmt: skip


class TextFormatter(JsonFormatter):
    """The same redacted fields as one line a person reads in a development terminal:
    ``20:37:03 INFO  idp.web.background: message`` (a request's closing line:
    ``GET login.login 200 12 ms``), with a traceback below its line."""

    def format(self, record: logging.LogRecord) -> str:
        line = self.fields(record)
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{clock} {line['level']:<7} {line['logger']}: {line['message']}"
        if "duration_ms" in line:
            text += f" {line['duration_ms']:.0f} ms"
        trace = line.get("exception") or line.get("stack")
        return f"{text}\n{str(trace).rstrip()}" if trace else text


class HideServerAddress(logging.Filter):
    """The WSGI servers announce the socket they bound ("Listening at: http://127.0.0.1:5000"),
    an address where passkeys cannot work (WebAuthn L3 5.1.3: the RP ID is a domain, never an IP
    address). In development ``idp serve`` prints the issuer's address instead, once ready."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Listening at")


#: ``log_format`` values: JSON lines, or text lines for a person at a development terminal.
LOG_FORMATS = ("json", "text")


def dict_config(level: str = "INFO", log_format: str = "json") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for idp and its WSGI server (gunicorn's
    ``logconfig_dict``, granian's ``log_dictconfig``): everything through one handler, JSON
    (``log_format`` ``json``) or text (``text``)."""
    level = level.upper()
    text = log_format == "text"
    handler: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": log_format if text else "json",
        "stream": "ext://sys.stderr",
    }
    if text:
        handler["filters"] = ["hide_server_address"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "filters": {"hide_server_address": {"()": f"{__name__}.HideServerAddress"}},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # The servers' own loggers write through the root handler, not their own.
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("gunicorn.error", "gunicorn.access", "granian", "_granian")
            },
            # SQL statements and their parameters (password hashes, token hashes) never reach the
            # log, whatever the level: the database's own statement log is the place for them.
            "sqlalchemy": {"level": "WARNING", "handlers": [], "propagate": True},
        },
    }


def configure(level: str = "INFO", log_format: str = "json") -> None:
    """Route this process's logging through the JSON (or text) handler on stderr."""
    import logging.config

    logging.config.dictConfig(dict_config(level, log_format))
    # Neither format prints where a call was made, which thread made it or the multiprocessing
    # process name: Python's logging HOWTO ("Optimization") turns all three off, which saves a
    # stack walk on every line, the closing line of every request among them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.captureWarnings(True)
    # Python's last-resort output for an exception nobody caught goes through the handler too.
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    logging.getLogger("idp").critical("uncaught exception", exc_info=(kind, error, tb))
