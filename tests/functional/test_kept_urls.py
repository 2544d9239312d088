"""Pages name their static files by ``static_url`` and their endpoints by ``page_url`` (idp.web),
which keep url_for's answer per application, script root and endpoint or file: the same
addresses as url_for, under any script root."""

from __future__ import annotations

from flask import Flask, url_for

from idp.web import URLS_KEPT, page_url, static_url


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
        for i in range(3 * URLS_KEPT):
            static_url(f"file-{i}.js")
        assert len(app.extensions["idp.kept_urls"]) <= URLS_KEPT


def test_the_sign_in_page_links_its_files(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/login").text
    for name in ("style.css", "favicon.svg", "webauthn.js", "login.js"):
        assert f'"/static/{name}"' in page


def test_page_url_is_url_for_of_an_endpoint(app: Flask) -> None:
    for root in ("", "/idp"):
        with app.test_request_context("/login", base_url=f"http://localhost{root}/"):
            for endpoint in ("login.login", "login.second_step", "account.home"):
                assert page_url(endpoint) == url_for(endpoint)
                assert page_url(endpoint) == url_for(endpoint)
