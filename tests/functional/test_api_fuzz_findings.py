"""What fuzzing the admin API against its own OpenAPI document found (test_api_schemathesis.py),
each as the exact request that failed, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from joserfc.jwk import ECKey

from idp.models import Client
from tests.functional.test_api import Api, issue, problem
from tests.support.factories import rows


@pytest.fixture
def api(storage_app: Flask) -> Api:
    return Api(storage_app, issue(storage_app))


def test_a_body_with_nan_infinity_or_a_lone_surrogate_is_malformed_json(
    storage_app: Flask, api: Api
) -> None:
    """RFC 8259 6 has no NaN or Infinity (Python's parser takes both, and 1e400 as infinity) and
    I-JSON (RFC 7493 2.1) no lone surrogate: a client's JWKS, which the schema takes as any
    object, holding one was stored on SQLite and a 500 on PostgreSQL, whose json type refuses
    them. The body is malformed JSON (400), and nothing is stored."""
    key = json.dumps(ECKey.generate_key("P-256").as_dict(private=False))[1:-1]
    for member in ('"x-extra": NaN', '"x-extra": -Infinity', '"x-extra": 1e400',
                   '"x-extra": "\\ud800"', '"\\udfff": 1'):  # fmt: skip
        body = (
            '{"name": "Signed", "redirect_uris": ["https://app.example/cb"], '
            '"token_endpoint_auth_method": "private_key_jwt", '
            '"jwks": {"keys": [{' + key + ", " + member + "}]}}"
        )
        response = api.call(
            "POST", "/clients", data=body, headers={"Content-Type": "application/json"}
        )
        problem(response, 400, "malformed-json")
    assert rows(storage_app, Client) == []
