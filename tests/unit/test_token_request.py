"""idp.oidc.token_request: Authlib's request at the token side, made from Flask's."""

from __future__ import annotations

import pytest
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InsecureTransportError
from flask import Request
from werkzeug.test import EnvironBuilder

from idp.oidc.token_request import TokenSideRequest


def _flask_request(base_url: str) -> Request:
    builder = EnvironBuilder(
        path="/token", base_url=base_url, method="POST", data={"grant_type": "client_credentials"}
    )
    return Request(builder.get_environ())


def test_the_request_has_every_attribute_authlibs_constructor_sets() -> None:
    """TokenSideRequest sets what ``OAuth2Request.__init__`` sets instead of calling it (the
    transport verdict is remembered per origin): an Authlib that sets more fails here."""
    authlib_request = OAuth2Request("POST", "https://id.example.com/token")
    ours = TokenSideRequest(_flask_request("https://id.example.com"))
    assert set(vars(authlib_request)) <= set(vars(ours))
    assert ours.method == "POST"
    assert ours.uri == "https://id.example.com/"
    assert ours.payload.grant_type == "client_credentials"


@pytest.mark.parametrize(
    ("base_url", "secure"),
    [
        ("https://id.example.com", True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost", True),
        ("http://[::1]:8000", True),
        ("http://id.example.com", False),
        ("http://10.0.0.1", False),
    ],
)
def test_the_transport_check_is_authlibs_on_every_request(base_url: str, secure: bool) -> None:
    """RFC 6749 1.6 and 3.2 (TLS), RFC 8252 7.3 (loopback): the same verdict the first time and
    from the remembered one."""
    for _ in range(2):
        if secure:
            TokenSideRequest(_flask_request(base_url))
        else:
            with pytest.raises(InsecureTransportError):
                TokenSideRequest(_flask_request(base_url))


def test_an_https_issuer_is_the_verdict_whatever_the_last_hops_scheme() -> None:
    """A balancer ends TLS and talks plain http to idp, with or without X-Forwarded-Proto: with
    an https issuer the request is over TLS where the deployment says it is."""
    TokenSideRequest(_flask_request("http://id.example.com"), https_issuer=True)


def test_authlibs_insecure_transport_switch_is_honoured_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = "http://id.example.com"
    with pytest.raises(InsecureTransportError):
        TokenSideRequest(_flask_request(plain))
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    TokenSideRequest(_flask_request(plain))
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT")
    with pytest.raises(InsecureTransportError):
        TokenSideRequest(_flask_request(plain))


@pytest.mark.parametrize(
    ("method", "query_string"), [("POST", ""), ("POST", "scope=openid"), ("GET", "state=x")]
)
def test_the_payload_reads_what_werkzeugs_values_hold(method: str, query_string: str) -> None:
    """RFC 6749 3.2: the parameters are Werkzeug's ``values`` (the query, then a body that is not
    a GET's), whichever of its parts the payload reads."""
    builder = EnvironBuilder(
        path="/token",
        base_url="https://id.example.com",
        method=method,
        query_string=query_string,
        data={"grant_type": "client_credentials", "scope": "email"} if method == "POST" else None,
    )
    request = Request(builder.get_environ())
    payload = TokenSideRequest(request).payload
    assert payload.data.to_dict(flat=False) == request.values.to_dict(flat=False)
    for name in ("grant_type", "scope", "state"):
        assert payload.data.get(name) == request.values.get(name)
        assert payload.data.getlist(name) == request.values.getlist(name)
