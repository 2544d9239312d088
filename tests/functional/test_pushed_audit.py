"""The audit log of the PAR endpoint (RFC 9126 2), on SQLite and PostgreSQL: a push is audited
as the device flow's request is, and a push refused after its client authenticated is audited
too: one row each for a confidential client, once per address and window for a public one,
whose client_id authenticates nobody (docs/operations.md, "Storage budgets")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask

from idp.clock import FrozenClock
from idp.models import AuditEvent, PushedAuthorizationRequest
from idp.models.base import utcnow
from idp.services.anonymous import REJECTION_AUDIT_WINDOW
from idp.services.rate_limits import window_end
from tests.functional.test_pushed_authorization import ADDRESS, PER_CLIENT, basic, push
from tests.support.apps import app_on
from tests.support.clock import app_clock
from tests.support.counted import counted
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
    return counted("idp_anonymous_rejections_total", kind=REFUSED, reason=reason)


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


@pytest.fixture(params=["sqlite", "postgresql"])
def bounded_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """Confidential clients may push ``PER_CLIENT`` requests a minute, on each database."""
    with app_on(request.param, tmp_path, par_requests_per_client=PER_CLIENT) as flask_app:
        yield flask_app


def test_a_confidential_clients_pushes_past_its_budget_are_audited_once_per_window(
    bounded_app: Flask,
) -> None:
    """A confidential client's push refused past ``par_requests_per_client`` (429) was only
    counted: the audit log, where an operator looks for a client that misbehaves or a secret
    someone else holds, showed nothing. The first refusal of each client in each audit window is
    ``authorization.push_refused`` with ``temporarily_unavailable``, marked aggregated; the rest
    are counted (``idp_budget_refusals_total``), not a row each, so a flood writes no row a
    refusal: a new minute's budget spent again in the same window adds none, another client has
    its own row, and the next window a new one."""
    start = window_end(utcnow(), REJECTION_AUDIT_WINDOW) + timedelta(seconds=10)
    frozen = FrozenClock(start)
    with app_clock(bounded_app, frozen):
        rp = RelyingParty(bounded_app.test_client(), create_client(bounded_app))
        other = RelyingParty(bounded_app.test_client(), create_client(bounded_app, name="Other"))

        def over_budget(who: RelyingParty) -> None:
            answers = [push(who).status_code for _ in range(PER_CLIENT + 3)]
            assert answers == [201] * PER_CLIENT + [429] * 3

        def refusals(who: RelyingParty) -> list[AuditEvent]:
            return [e for e in events(bounded_app)
                    if e.kind == REFUSED and e.client_id == who.registered.client_id]  # fmt: skip

        over_budget(rp)
        [refused] = refusals(rp)
        assert refused.outcome == "failure"
        assert refused.details["error"] == "temporarily_unavailable"
        assert refused.details["aggregated"] is True
        assert refused.ip_address == ADDRESS
        frozen.advance(timedelta(minutes=1))  # a new budget, the same audit window
        over_budget(rp)
        assert len(refusals(rp)) == 1
        over_budget(other)
        assert len(refusals(other)) == 1
        frozen.advance(REJECTION_AUDIT_WINDOW)
        over_budget(rp)
        assert len(refusals(rp)) == 2
