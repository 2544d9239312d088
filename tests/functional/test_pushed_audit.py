"""The audit log of the PAR endpoint (RFC 9126 2), on SQLite and PostgreSQL: a push is audited
as the device flow's request is, and a push refused after its client authenticated is audited
too: one row each for a confidential client, once per address and window for a public one,
whose client_id authenticates nobody (docs/operations.md, "Storage budgets")."""

from __future__ import annotations

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from idp import metrics
from idp.models import AuditEvent, PushedAuthorizationRequest
from tests.functional.test_pushed_authorization import ADDRESS, basic, push
from tests.support.factories import RegisteredClient, create_client, rows
from tests.support.flow import RelyingParty

PUSHED = "authorization.pushed"
REFUSED = "authorization.push_refused"


@pytest.fixture
def rp(storage_app: Flask) -> RelyingParty:
    return RelyingParty(storage_app.test_client(), create_client(storage_app))


def events(app: Flask) -> list[AuditEvent]:
    return rows(app, AuditEvent, AuditEvent.kind.like("authorization.push%"))


def refusals_counted(reason: str) -> float:
    text, _ = metrics.exposition()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "idp_anonymous_rejections_total" and sample.labels == {
                "kind": REFUSED, "reason": reason,
            }:  # fmt: skip
                return sample.value
    return 0.0


def test_a_push_and_a_confidential_clients_refused_push_are_audited(
    storage_app: Flask, rp: RelyingParty
) -> None:
    """A push is ``authorization.pushed`` (its client, address and scope), as the device flow's
    ``device.authorization_requested``; a push of an authenticated client that /authorize's
    checks refuse is ``authorization.push_refused`` with the error sent, one row each. A failed
    client authentication, or a client_id naming another client than the Basic header (refused
    before any client authenticates, idp.oidc.client_auth), is no push of that client."""
    assert push(rp).status_code == 201
    assert push(rp, redirect_uri="https://evil.example/callback").status_code == 400
    other = create_client(storage_app, name="Other")
    assert push(rp, client_id=other.client_id).status_code == 400
    wrong = RegisteredClient(rp.registered.client_id, "not-the-secret", rp.registered.redirect_uri)
    assert push(rp, headers=basic(wrong)).status_code == 401

    pushed, *refused = events(storage_app)
    assert (pushed.kind, pushed.outcome, pushed.client_id) == (
        PUSHED, "success", rp.registered.client_id)  # fmt: skip
    assert pushed.ip_address == ADDRESS
    assert pushed.details["scope"] == "openid profile email offline_access"
    assert [(e.kind, e.outcome, e.client_id, e.details["error"]) for e in refused] == [
        (REFUSED, "failure", rp.registered.client_id, "invalid_request"),
    ]
    assert "evil.example" in refused[0].details["description"]
    assert len(rows(storage_app, PushedAuthorizationRequest)) == 1


@pytest.mark.usefixtures("clock")  # within one window
def test_a_public_clients_refused_pushes_are_audited_once_per_address_and_window(
    storage_app: Flask,
) -> None:
    """A public client's client_id authenticates nobody: its refused pushes are anonymous
    writes, counted (``idp_anonymous_rejections_total``) and audited once per address and
    window, not a row each; its pushes are audited within the address's budget."""
    public = create_client(storage_app, public=True, redirect_uris=["https://spa.example/cb"])
    spa = RelyingParty(storage_app.test_client(), public)
    before = refusals_counted("invalid_request")
    for _ in range(5):
        assert push(spa, code_challenge=None, code_challenge_method=None).status_code == 400
    assert push(spa).status_code == 201
    assert refusals_counted("invalid_request") - before == 5
    refused, pushed = sorted(events(storage_app), key=lambda e: e.kind)
    assert (refused.kind, refused.outcome, refused.details["aggregated"]) == (
        REFUSED, "failure", True)  # fmt: skip
    assert public.client_id in refused.details["detail"]
    assert (pushed.kind, pushed.client_id) == (PUSHED, public.client_id)
