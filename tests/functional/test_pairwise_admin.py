"""A client's subject type as an admin sets it (docs/admins.md, "Pairwise subject identifiers"):
the console's form, the admin API and ``idp clients``; a change of every user's ``sub`` is made
only when confirmed, and audited."""

from __future__ import annotations

from typing import Any

from flask import Flask

from tests.functional.test_admin_clients import (
    admin,
    audit_events,
    client_form,
    edit,
    idp,
    initialised_database,
    register,
    stored,
)
from tests.functional.test_api import Api, issue, problem
from tests.functional.test_cli import Idp
from tests.support.admin import ConsoleBrowser
from tests.support.factories import create_user
from tests.support.flow import RelyingParty, jwt_parts

__all__ = ["admin", "idp", "initialised_database"]  # the fixtures, shared with their module

SHOP = "https://shop.example.com/cb"
BLOG = "https://blog.example.org/cb"


def api_client(api: Api, **members: Any) -> dict[str, Any]:
    response = api.call("POST", "/clients", {"name": "Shop", "redirect_uris": [SHOP], **members})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.get_json()
    return body


def test_the_api_registers_and_changes_a_pairwise_client_only_when_confirmed(
    storage_app: Flask,
) -> None:
    api = Api(storage_app, issue(storage_app))
    created = api_client(api, subject_type="pairwise")
    assert (created["subject_type"], created["sector_identifier"]) == ("pairwise", None)
    path = f"/clients/{created['client_id']}"
    etag = api.call("GET", path).headers["ETag"]
    refused = api.call("PATCH", path, {"sector_identifier": "corp.example"},
                       headers={"If-Match": etag})  # fmt: skip
    assert "another subject identifier" in problem(refused, 409, "subject-change")["detail"]
    assert api.call("GET", path).get_json()["sector_identifier"] is None
    changed = api.call("PATCH", path, {"sector_identifier": "corp.example",
                                       "confirm_subject_change": True},
                       headers={"If-Match": etag})  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.get_json()["sector_identifier"] == "corp.example"
    [event] = audit_events(storage_app, "client.subjects_changed")
    assert event.details["old"] == {"subject_type": "pairwise", "sector": "shop.example.com"}
    assert event.details["new"] == {"subject_type": "pairwise", "sector": "corp.example"}
    assert event.details["via"] == "api"
    # Other changes need no confirmation.
    etag = changed.headers["ETag"]
    renamed = api.call("PATCH", path, {"name": "Shop 2"}, headers={"If-Match": etag})
    assert renamed.status_code == 200, renamed.text


def test_a_unicode_redirect_host_is_the_sector_of_its_idna_2008_a_label(
    storage_app: Flask,
) -> None:
    """docs/admins.md, "Pairwise subject identifiers": ``fa\u00df.example`` in a redirect URI is
    the sector ``xn--fa-hia.example``, where a browser is redirected (UTS 46), so naming that
    A-label changes no user's sub and needs no confirmation; ``fass.example`` (IDNA 2003's
    form) is another sector."""
    api = Api(storage_app, issue(storage_app))
    unicode_host = {"subject_type": "pairwise", "redirect_uris": ["https://FA\u00df.example/cb"]}
    response = api.call("POST", "/clients", {"name": "Fa\u00df", **unicode_host})
    assert response.status_code == 201, response.text
    path = f"/clients/{response.get_json()['client_id']}"
    same = api.call("PATCH", path, {"sector_identifier": "xn--fa-hia.example"},
                    headers={"If-Match": response.headers["ETag"]})  # fmt: skip
    assert same.status_code == 200, same.text
    assert same.get_json()["sector_identifier"] == "xn--fa-hia.example"
    assert audit_events(storage_app, "client.subjects_changed") == []
    other = api.call("PATCH", path, {"sector_identifier": "fass.example"},
                     headers={"If-Match": same.headers["ETag"]})  # fmt: skip
    problem(other, 409, "subject-change")
    snowman = {"subject_type": "pairwise", "redirect_uris": ["https://\u2603.example/cb"]}
    refused = api.call("POST", "/clients", {"name": "Snow", **snowman})
    assert "IDNA 2008" in problem(refused, 422, "invalid-value")["detail"]


def test_the_api_refuses_a_pairwise_client_on_several_hosts_without_a_sector(
    app: Flask,
) -> None:
    api = Api(app, issue(app))
    body = {"name": "Shop", "redirect_uris": [SHOP, BLOG], "subject_type": "pairwise"}
    refused = api.call("POST", "/clients", body)
    assert "several hosts" in problem(refused, 422, "invalid-value")["detail"]
    unknown = api.call("POST", "/clients", {**body, "subject_type": "random"})
    assert unknown.status_code == 422


def test_the_openapi_document_describes_the_subject_members(app: Flask) -> None:
    schemas = Api(app, None).call("GET", "/openapi.json").get_json()["components"]["schemas"]
    assert schemas["ClientCreate"]["properties"]["subject_type"]["enum"] == ["public", "pairwise"]
    assert "sector_identifier" in schemas["ClientOut"]["properties"]
    assert "confirm_subject_change" in schemas["ClientPatch"]["properties"]


def test_the_console_sets_the_subject_type_and_asks_before_changing_it(
    app: Flask, admin: ConsoleBrowser
) -> None:
    client_id, secret = register(
        admin, redirect_uris=SHOP, subject_type="pairwise", first_party="1"
    )
    row = stored(app, client_id)
    assert row is not None
    assert row.subject_type == "pairwise"
    page = admin.browser.get(f"/admin/clients/{client_id}").text
    assert "pairwise, sector <code>shop.example.com</code>" in page
    # The users' sub at this client is its sector's, not their id.
    user = create_user(app)
    rp = RelyingParty(app.test_client(), _registered(client_id, secret))
    sub = jwt_parts(rp.tokens_for(user)["id_token"])[1]["sub"]
    assert sub != user.id
    # The console's preview of what the app receives shows the same sub.
    preview = admin.browser.get(f"/admin/clients/{client_id}/claims?email={user.email}").text
    assert sub in preview
    assert user.id not in preview
    public_again = client_form(redirect_uris=SHOP, subject_type="public", first_party="1")
    refused = edit(admin, client_id, public_again)
    assert refused.status_code == 400
    assert "another subject identifier" in refused.text
    assert stored(app, client_id).subject_type == "pairwise"  # type: ignore[union-attr]
    done = edit(admin, client_id, {**public_again, "confirm_subject_change": "1"})
    assert done.status_code == 302, done.text
    assert stored(app, client_id).subject_type == "public"  # type: ignore[union-attr]
    [event] = audit_events(app, "client.subjects_changed")
    assert event.actor_id == admin.user.id


def _registered(client_id: str, secret: str | None) -> Any:
    from tests.support.factories import RegisteredClient

    return RegisteredClient(client_id=client_id, client_secret=secret, redirect_uri=SHOP)


def test_the_cli_sets_the_subject_type_and_asks_before_changing_it(idp: Idp) -> None:
    created = idp.json("clients", "create", "--name", "Shop", "--redirect-uri", SHOP,
                       "--redirect-uri", BLOG, "--subject-type", "pairwise",
                       "--sector-identifier", "shop.example.com")  # fmt: skip
    assert (created["subject_type"], created["sector_identifier"]) == (
        "pairwise", "shop.example.com"
    )  # fmt: skip
    refused = idp.run("clients", "edit", created["client_id"], "--subject-type", "public")
    assert refused.exit_code != 0
    assert "another subject identifier" in refused.output
    changed = idp.json("clients", "edit", created["client_id"], "--subject-type", "public",
                       "--confirm-subject-change")  # fmt: skip
    assert (changed["subject_type"], changed["sector_identifier"]) == ("public", None)
