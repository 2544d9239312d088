"""Flask's answers reach the WSGI server as a list of one ``bytes`` (idp.app.WholeBodyResponse),
unless something waits for the body to be sent: what runs after an answer (``call_on_close``)
still runs, after the server has read the body, and a HEAD answer still has no body."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from idp.app import WholeBodyResponse


def _served(app: Flask, path: str, method: str = "GET") -> tuple[str, dict[str, str], Any]:
    """What the WSGI server gets for ``method path``: the status, the headers, the iterable."""
    answered: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answered.update(status=status, headers=dict(headers))

    environ = EnvironBuilder(path=path, method=method, base_url="http://localhost").get_environ()
    body = app(environ, start_response)
    return answered["status"], answered["headers"], body


def test_a_page_reaches_the_server_as_one_piece_of_the_length_it_declares(app: Flask) -> None:
    assert app.response_class is WholeBodyResponse
    _served(app, "/login")  # a fresh application's first answer may carry a prune after it
    status, headers, body = _served(app, "/login")
    assert status.startswith("200")
    assert type(body) is list, type(body)
    assert len(body) == 1
    assert isinstance(body[0], bytes)
    assert int(headers["Content-Length"]) == len(body[0])
    assert b"<html" in body[0]


def test_an_answer_with_work_after_it_runs_that_work_once_the_body_is_read() -> None:
    ran: list[str] = []
    response = WholeBodyResponse("sent first")
    response.call_on_close(lambda: ran.append("after"))
    body = response.get_app_iter(EnvironBuilder().get_environ())
    assert type(body) is not list  # Werkzeug's iterator: the server closes it once it is sent
    assert b"".join(body) == b"sent first"
    assert ran == []
    body.close()  # type: ignore[attr-defined]
    assert ran == ["after"]


def test_no_body_where_http_allows_none() -> None:
    """RFC 9110 9.3.2 (HEAD) and 15.3.5 (204): the status and headers, no content."""
    head = EnvironBuilder(method="HEAD").get_environ()
    get = EnvironBuilder(method="GET").get_environ()
    assert WholeBodyResponse("content").get_app_iter(head) == []
    assert WholeBodyResponse("", status=204).get_app_iter(get) == []
    assert WholeBodyResponse("content").get_app_iter(get) == [b"content"]


def test_a_streamed_body_is_left_to_werkzeug() -> None:
    streamed = WholeBodyResponse(iter([b"a", b"b"]))
    app_iter = streamed.get_app_iter(EnvironBuilder().get_environ())
    assert type(app_iter) is not list
    assert b"".join(app_iter) == b"ab"
