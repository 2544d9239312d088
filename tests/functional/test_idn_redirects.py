"""A client whose redirect URIs are on an internationalised host (docs/admins.md, "Pairwise subject
identifiers"; idp.services.host_names): every redirect to it names the A-labels a browser goes to
(IDNA 2008, UTS 46), never IDNA 2003's other name. Werkzeug writes a Unicode host in ``Location``
by Python's IDNA 2003 codec: ``faß.example``'s authorization code went to ``fass.example``."""

from __future__ import annotations

from flask import Flask

from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty, query_of, sign_in_address

UNICODE_CALLBACK = "https://FA\u00df.example/cb"
A_LABEL_CALLBACK = "https://xn--fa-hia.example/cb"
UNICODE_SIGNED_OUT = "https://fa\u00df.example:8443/bye"
A_LABEL_SIGNED_OUT = "https://xn--fa-hia.example:8443/bye"


def _leaving(rp: RelyingParty, response: object) -> str:
    """Follow idp's own redirects; the first ``Location`` that leaves idp."""
    for _ in range(10):
        location: str = response.headers["Location"]  # type: ignore[attr-defined]
        if not location.startswith(("/", "http://localhost")):
            return location
        response = rp.browser.get(location)
    raise AssertionError("too many redirects")


def test_an_authorization_response_goes_to_the_idna_2008_a_labels_of_the_redirect_host(
    app: Flask,
) -> None:
    registered = create_client(app, redirect_uris=[UNICODE_CALLBACK],
                               post_logout_redirect_uris=[UNICODE_SIGNED_OUT])  # fmt: skip
    rp = RelyingParty(app.test_client(), registered)
    user = create_user(app)

    # An error redirected to the client (RFC 6749 4.1.2.1: prompt=none without a session).
    refused = rp.authorize(prompt="none")
    assert refused.status_code == 302, refused.text
    assert refused.headers["Location"].startswith(A_LABEL_CALLBACK + "?error=login_required")

    # The code: at the A-label host, and good at the token endpoint for the registered URI.
    response = rp.authorize()
    address = sign_in_address(response)
    assert address is not None
    callback = _leaving(rp, rp.sign_in(address, user))
    assert callback.startswith(A_LABEL_CALLBACK + "?"), callback
    tokens = rp.exchange(query_of(callback)["code"])
    assert tokens.status_code == 200, tokens.text

    # RP-Initiated Logout 1.0 section 3: back to the post-logout URI's A-labels, port kept.
    signed_out = rp.browser.get("/logout", query_string={
        "id_token_hint": tokens.get_json()["id_token"],
        "post_logout_redirect_uri": UNICODE_SIGNED_OUT, "state": "s",
    })  # fmt: skip
    assert signed_out.status_code == 302, signed_out.text
    assert signed_out.headers["Location"] == A_LABEL_SIGNED_OUT + "?state=s"
