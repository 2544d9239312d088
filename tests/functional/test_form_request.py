"""idp.web.form_request: a URL-encoded form read by idp's shorter path is the form Werkzeug reads,
and every limit and failure is answered as Werkzeug answers it."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.test import EnvironBuilder

from idp.web.form_request import FORM_URLENCODED, FormRequest
from tests.support.passkey_flow import csrf_meta

BODIES = [
    b"",
    b"grant_type=client_credentials",
    b"a=1&a=2&b=&c",  # repeated keys, a blank value, a key without "="
    b"scope=openid+profile&redirect_uri=https%3A%2F%2Frp.example%2Fcb%3Fx%3D1",
    b"name=%C3%A9l%C3%A8ve&broken=%FF%FE",  # UTF-8 escapes, and escapes that are no UTF-8
    b"raw=\xff\xfe",  # a body that is not UTF-8 at all: an empty form for both
    b"semi=a;b&amp=%26",
]


def _environ(body: bytes, **headers: Any) -> dict[str, Any]:
    builder = EnvironBuilder(method="POST", data=body, content_type=FORM_URLENCODED, **headers)
    return builder.get_environ()


def _forms(app: Flask, body: bytes) -> tuple[list[Any], list[Any]]:
    with app.test_request_context():
        ours = app.request_class(_environ(body))
        werkzeugs = Request(_environ(body))
        return list(ours.form.lists()), list(werkzeugs.form.lists())


@pytest.mark.parametrize("body", BODIES)
def test_a_urlencoded_form_reads_as_werkzeug_reads_it(app: Flask, body: bytes) -> None:
    assert issubclass(app.request_class, FormRequest)
    ours, werkzeugs = _forms(app, body)
    assert ours == werkzeugs


def test_a_form_over_the_content_limit_is_refused_with_413(app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    with app.test_request_context():
        request = app.request_class(_environ(b"a=" + b"x" * limit))
        with pytest.raises(RequestEntityTooLarge):
            request.form  # noqa: B018 - reading it parses it


def test_a_body_shorter_than_announced_is_a_client_that_went_away(app: Flask) -> None:
    environ = _environ(b"grant_type=client_credentials")
    environ["CONTENT_LENGTH"] = "500"
    with app.test_request_context(), pytest.raises(ClientDisconnected):
        app.request_class(environ).form  # noqa: B018


def test_the_body_is_read_once_and_nothing_is_left_after_the_form(app: Flask) -> None:
    with app.test_request_context():
        request = app.request_class(_environ(b"a=1"))
        assert request.form["a"] == "1"
        assert request.get_data() == b""  # as after Werkzeug's parse


def test_a_body_read_before_the_form_still_gives_the_form(app: Flask) -> None:
    with app.test_request_context():
        request = app.request_class(_environ(b"a=1&b=2"))
        assert request.get_data() == b"a=1&b=2"
        assert request.form.to_dict() == {"a": "1", "b": "2"}


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke", "/login", "/userinfo"])
def test_an_oversized_form_is_answered_413_not_500(client: Any, path: str) -> None:
    # The token endpoint's metrics read the grant type after the view: reading the form again
    # there raised the 413 once more, inside the hook, and made it a 500 (idp.observability).
    response = client.post(
        path, data=b"grant_type=x&pad=" + b"a" * (1024 * 1024), content_type=FORM_URLENCODED
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-url-encoded", None]
)
def test_a_body_that_is_no_form_is_an_empty_form_and_stays_readable(
    app: Flask, content_type: str | None
) -> None:
    body = b'{"a": "1"}'
    with app.test_request_context():
        builder = EnvironBuilder(method="POST", data=body, content_type=content_type)
        ours = app.request_class(builder.get_environ())
        werkzeugs = Request(
            EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
        )
        assert list(ours.form.lists()) == list(werkzeugs.form.lists()) == []
        assert list(ours.files.lists()) == list(werkzeugs.files.lists()) == []
        # The form did not consume the body: it reads whole afterwards, as after Werkzeug's.
        assert ours.get_data() == werkzeugs.get_data() == body


@pytest.mark.parametrize("path", ["/login/passkey/verify", "/login/passkey/options"])
def test_an_oversized_json_body_is_answered_413(client: Any, path: str) -> None:
    # The form of a JSON body is empty without its stream being built; the limit still holds
    # when the view reads the body.
    csrf = csrf_meta(client.get("/login").text)
    response = client.post(
        path,
        data=b'{"pad": "' + b"a" * (1024 * 1024) + b'"}',
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert response.status_code == 413
