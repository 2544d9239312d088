"""URL rules whose builders are compiled at their first use (idp.web.routing)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, url_for
from werkzeug.routing import Rule

from idp.web.routing import BuiltOnFirstUseRule


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The rules whose builders werkzeug compiled, one entry per builder."""
    seen: list[str] = []
    compile_builder = Rule._compile_builder

    def counted(rule: Rule, append_unknown: bool = True) -> Any:
        seen.append(rule.rule)
        return compile_builder(rule, append_unknown)

    monkeypatch.setattr(Rule, "_compile_builder", counted)
    return seen


class _Flask(Flask):
    url_rule_class = BuiltOnFirstUseRule


def _app() -> Flask:
    app = _Flask(__name__)
    for name in ("a", "b", "c"):
        app.add_url_rule(f"/{name}/<int:item>", name, lambda item: str(item))
    app.add_url_rule("/d/", "d", lambda page: page, defaults={"page": "first"})
    return app


def test_adding_rules_compiles_no_url_builder(compiled: list[str]) -> None:
    """Each idp process builds the application's 130-odd rules and builds URLs for a few."""
    _app()
    assert compiled == []


def test_a_rule_s_builders_are_compiled_once_each_at_their_first_use(compiled: list[str]) -> None:
    app = _app()
    with app.test_request_context():
        assert url_for("a", item=1) == "/a/1"
        assert url_for("a", item=2) == "/a/2"
        assert url_for("a", item=3, q="x y") == "/a/3?q=x+y"
        assert url_for("d") == "/d/"
    assert compiled == ["/a/<int:item>", "/d/"]  # url_for's builder: unknown values appended
    adapter = app.url_map.bind("localhost")
    assert adapter.build("a", {"item": 4, "q": "x"}, append_unknown=False) == "/a/4"
    assert adapter.build("a", {"item": 5}, append_unknown=False) == "/a/5"
    assert compiled == ["/a/<int:item>", "/d/", "/a/<int:item>"]  # and the other, once


def test_urls_are_built_and_matched_as_werkzeug_s_own_rules_do() -> None:
    app = _app()
    plain = Flask(__name__)
    for name in ("a", "b", "c"):
        plain.add_url_rule(f"/{name}/<int:item>", name, lambda item: str(item))
    plain.add_url_rule("/d/", "d", lambda page: page, defaults={"page": "first"})
    for each in (app, plain):
        with each.test_request_context():
            built = [url_for("b", item=7, _external=True), url_for("c", item=0, extra=["1", "2"])]
            built.append(url_for("d", page="first"))
        assert built == ["http://localhost/b/7", "/c/0?extra=1&extra=2", "/d/"]
        assert each.test_client().get("/c/5").text == "5"
        assert each.test_client().get("/d/").text == "first"
