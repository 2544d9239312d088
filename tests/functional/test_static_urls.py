"""Pages name their static files by ``static_url`` (idp.web), which keeps url_for's answer per
application, script root and file: the same addresses as url_for, under any script root."""

from __future__ import annotations

from flask import Flask, url_for

from idp.web import STATIC_URLS_KEPT, static_url


def test_the_same_address_as_url_for(app: Flask) -> None:
    for root in ("", "/idp", "/other"):
        with app.test_request_context("/login", base_url=f"http://localhost{root}/"):
            for name in ("style.css", "login.js", "a b.js"):
                expected = url_for("static", filename=name)
                assert static_url(name) == expected
                assert static_url(name) == expected  # kept, still the same
                assert expected.startswith(f"{root}/static/")


def test_outside_a_request_url_for_as_before(app: Flask) -> None:
    app.config["SERVER_NAME"] = "idp.example"
    try:
        with app.app_context():
            assert static_url("style.css") == url_for("static", filename="style.css")
    finally:
        app.config["SERVER_NAME"] = None


def test_bounded(app: Flask) -> None:
    with app.test_request_context("/login"):
        for i in range(3 * STATIC_URLS_KEPT):
            static_url(f"file-{i}.js")
        assert len(app.extensions["idp.static_urls"]) <= STATIC_URLS_KEPT


def test_the_sign_in_page_links_its_files(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/login").text
    for name in ("style.css", "favicon.svg", "webauthn.js", "login.js"):
        assert f'"/static/{name}"' in page
