"""What fuzzing the admin API against its own OpenAPI document found (test_api_schemathesis.py),
each as the exact request that failed, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from joserfc.jwk import ECKey
from jsonschema import Draft202012Validator

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


def test_an_integer_member_takes_a_number_with_a_zero_fraction(api: Api) -> None:
    """JSON has one number type (RFC 8259 6) and the document's integer is JSON Schema's, any
    number with a zero fractional part (2020-12 core 4.2.1): ``{"ttl_seconds": 433.0}`` was
    refused as not matching the schema that the document said it matched. A fraction, a string
    or a boolean is still refused."""
    user = api.call("POST", "/users", {"email": "grace@example.com", "invite_ttl_seconds": 3600.0})
    assert user.status_code == 201, user.text
    user_id = user.get_json()["id"]
    link = api.call("POST", f"/users/{user_id}/login-links", {"ttl_seconds": 433.0})
    assert link.status_code == 201, link.text
    client = api.call("POST", "/clients", {"name": "App", "redirect_uris": ["https://a.example/"]})
    rotated = api.call(
        "POST", f"/clients/{client.get_json()['client_id']}/rotate-secret", {"overlap_seconds": 0.0}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.get_json()["previous_secret_expires_at"] is None  # no overlap: 0, not 0.5
    for refused in (433.5, "433", True):
        response = api.call("POST", f"/users/{user_id}/login-links", {"ttl_seconds": refused})
        problem(response, 422, "invalid-body")


def test_the_document_says_no_text_holds_a_nul(app: Flask) -> None:
    """``POST /groups`` with ``{"name": "a\\u0000"}`` is refused (400: PostgreSQL text cannot
    hold a NUL), and the document said any string: it says no NUL now, of every string a request
    takes in a body, a path or a query that is not one of an enum's values, and of every name
    and text inside a client's ``jwks`` (``POST /clients`` with ``{"jwks": {"keys": [{"k\\u0000":
    1}]}}``, refused alike, was a valid body to the document)."""
    api = Api(app, issue(app))
    problem(api.call("POST", "/groups", {"name": "a\u0000"}), 400, "malformed-json")
    document = api.call("GET", "/openapi.json").get_json()
    group = Draft202012Validator(document["components"]["schemas"]["GroupCreate"])
    assert not group.is_valid({"name": "a\u0000"})
    assert group.is_valid({"name": "a"})
    # A free-form member (a client's JWKS) says it too, of its names and texts at any depth.
    client = Draft202012Validator(
        {"$ref": "#/components/schemas/ClientCreate", "components": document["components"]}
    )
    body = {"name": "App", "redirect_uris": ["https://a.example/"]}
    assert client.is_valid(body | {"jwks": {"keys": [{"kty": "EC", "x": [1.5, {"a": None}]}]}})
    for jwks in ({"keys": [{"k\u0000": 1}]}, {"keys": [{"kty": ["EC\u0000"]}]}):
        assert not client.is_valid(body | {"jwks": jwks})
        problem(api.call("POST", "/clients", body | {"jwks": jwks}), 400, "malformed-json")
    strings = []

    def collect(schema: Any) -> None:
        if isinstance(schema, dict):
            if schema.get("type") == "string" and "enum" not in schema:
                strings.append(schema)
            for value in schema.values():
                collect(value)
        elif isinstance(schema, list):
            for value in schema:
                collect(value)

    for item in document["paths"].values():
        for op in item.values():
            collect([p for p in op["parameters"] if p["in"] in ("path", "query")])
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                collect(document["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    assert len(strings) > 40
    assert all(s.get("pattern") == "^[^\\u0000]*$" for s in strings)


def test_the_audit_filter_takes_rfc_3339_times_and_no_empty_one(api: Api) -> None:
    """The document says ``since`` and ``until`` are RFC 3339 date-times, whose "T" and "Z" may
    be lower case (5.6): ``since=2026-12-01t00:00:00z`` was refused. An empty one is no time (it
    was taken as no filter): 400, as any time that is none."""
    ok = api.call("GET", "/audit?since=2026-12-01t00:00:00z&until=2126-12-01t00:00:00Z")
    assert ok.status_code == 200, ok.text
    for query in ("since=", "until=", "since=yesterday"):
        problem(api.call("GET", f"/audit?{query}"), 400, "invalid-query")
    document = api.call("GET", "/openapi.json").get_json()
    parameters = {p["name"]: p["schema"] for p in document["paths"]["/audit"]["get"]["parameters"]}
    assert parameters["since"]["format"] == parameters["until"]["format"] == "date-time"


def test_each_operation_declares_the_statuses_it_answers_and_no_others(app: Flask) -> None:
    """A ``default`` response declared every status at every operation, so that no client (nor
    the fuzzing) could tell an answer the operation never gives. Each operation now declares its
    statuses, each with the problem types it stands for: those the answers below are, and not
    those the operation never gives (a list has no 404, a read no 409 or 422)."""
    api = Api(app, issue(app))
    paths = api.call("GET", "/openapi.json").get_json()["paths"]
    assert all("default" not in op["responses"] for item in paths.values() for op in item.values())
    client_id = api.call(
        "POST", "/clients", {"name": "App", "redirect_uris": ["https://a.example/"]}
    ).get_json()["client_id"]
    assert api.call("POST", "/groups", {"name": "staff"}).status_code == 201
    answers = [
        ("GET", "/clients/{client_id}", api.call("GET", "/clients/nope"), "not-found"),
        ("DELETE", "/clients/{client_id}",
         api.call("DELETE", f"/clients/{client_id}", headers={"If-Match": '"v9"'}),
         "precondition-failed"),
        ("PATCH", "/clients/{client_id}", api.call("PATCH", f"/clients/{client_id}", {}),
         "precondition-required"),
        ("POST", "/groups", api.call("POST", "/groups", {"name": "staff"}), "conflict"),
        ("PATCH", "/clients/{client_id}",
         api.call("PATCH", f"/clients/{client_id}", {"subject_type": "pairwise"},
                  headers={"If-Match": api.call("GET", f"/clients/{client_id}").headers["ETag"]}),
         "subject-change"),
        ("GET", "/audit", api.call("GET", "/audit?since=yesterday"), "invalid-query"),
    ]  # fmt: skip
    for method, path, response, slug in answers:
        status = str(response.status_code)
        problem(response, response.status_code, slug)
        assert slug in paths[path][method.lower()]["responses"][status]["description"], path
    assert not {"404", "409", "422"} & set(paths["/clients"]["get"]["responses"])
    assert not {"409", "422"} & set(paths["/clients/{client_id}"]["get"]["responses"])


def test_a_creation_links_to_the_operations_on_what_it_created(app: Flask) -> None:
    """The document had no links, so that nothing (a client generator, the fuzzing's stateful
    run) could tell that ``POST /clients``' answer names the client ``PATCH /clients/{client_id}``
    takes, with its ETag as If-Match: each creation links to the operations on what it made, and
    following the links works."""
    api = Api(app, issue(app))
    paths = api.call("GET", "/openapi.json").get_json()["paths"]
    links = paths["/clients"]["post"]["responses"]["201"]["links"]
    assert set(links) == {"get_client", "patch_client", "delete_client", "rotate_client_secret"}
    assert links["patch_client"]["parameters"] == {
        "client_id": "$response.body#/client_id",
        "header.If-Match": "$response.header.ETag",
    }
    assert paths["/users"]["post"]["responses"]["201"]["links"]["disable_user"]["parameters"] == {
        "user_id": "$response.body#/id"
    }
    assert "add_group_members" in paths["/groups"]["post"]["responses"]["201"]["links"]
    created = api.call("POST", "/clients", {"name": "App", "redirect_uris": ["https://a.example/"]})
    patched = api.call(
        "PATCH", f"/clients/{created.get_json()['client_id']}", {"name": "Renamed"},
        headers={"If-Match": created.headers["ETag"]},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
