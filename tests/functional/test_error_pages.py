"""The error pages a person may land on: written for them, never Werkzeug's developer wording."""

from __future__ import annotations

from flask.testing import FlaskClient


def test_an_unknown_address_is_a_page_not_found_in_plain_words(client: FlaskClient) -> None:
    response = client.get("/no-such-page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text
    assert "There is nothing at this address" in response.text
    # Werkzeug's default, for developers: "Not Found", "The requested URL was not found on the
    # server. If you entered the URL manually please check your spelling ...".
    assert "Not Found" not in response.text
    assert "requested URL" not in response.text
    assert 'id="error-way-on"' in response.text


def test_a_wrong_method_says_what_to_do(client: FlaskClient) -> None:
    response = client.post("/account/sessions", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert "<h1>This page cannot do that</h1>" in response.text
    assert "Method Not Allowed" not in response.text
    assert "not allowed for the requested URL" not in response.text


def test_a_views_own_description_is_kept(client: FlaskClient) -> None:
    """A view that says why (``abort(404, description=...)``) keeps its words under our title."""
    response = client.get("/signup", headers={"Accept": "text/html"})  # sign-up is off
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text
    assert "This site does not offer sign-up" in response.text
