"""The activity page's sentences (idp.services.activity): one for every kind of event the code can
record, found by reading the code, so that a new event cannot reach a user's page as a bare name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from idp.models import AuditEvent
from idp.services.activity import NOT_ABOUT_A_USER, SENTENCES, describe_event

SOURCE = Path(__file__).resolve().parents[2] / "idp"
#: Calls that record an audit event, and the position of the event's kind among their arguments:
#: ``audit.record(db, kind, ...)``, the services' ``_audit(kind, ...)`` helpers, and the
#: anonymous refusals' ``refused(kind, ...)`` (which records through ``audit.record``).
#: ``audit.write`` is ``audit.record`` by a Core INSERT (the sign-in's hot path), ``audit.hold`` the
#: same row sent with the next one.
RECORDERS = {"record": 1, "write": 1, "hold": 1, "_audit": 0, "_audit_failure": 0, "refused": 0}


def _kinds_of(node: ast.expr, scope: ast.AST, module: ast.Module) -> set[str]:
    """The event kinds an argument can hold: a literal, either branch of a conditional, a value
    of a module-level dict, or a local variable assigned any of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _kinds_of(node.body, scope, module) | _kinds_of(node.orelse, scope, module)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        for statement in module.body:
            if (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == node.value.id
                            for t in statement.targets)):  # fmt: skip
                return {v.value for v in statement.value.values if isinstance(v, ast.Constant)}
    if isinstance(node, ast.Name):
        found: set[str] = set()
        for child in ast.walk(scope):
            if isinstance(child, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == node.id for t in child.targets
            ):
                found |= _kinds_of(child.value, scope, module)
        return found  # a parameter: its callers pass literals, found at their own calls
    return set()


def recorded_kinds() -> set[str]:
    kinds: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        module = ast.parse(path.read_text(), str(path))
        for function in ast.walk(module):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                    continue
                position = RECORDERS.get(call.func.attr)
                if position is None or len(call.args) <= position:
                    continue
                if call.func.attr in ("record", "write", "hold") and not (
                    isinstance(call.func.value, ast.Name)
                    and call.func.value.id in ("audit", "audit_log")
                ):
                    continue
                kinds |= _kinds_of(call.args[position], function, module)
    return kinds


def test_the_code_records_events_this_test_can_find() -> None:
    """The scan itself works: it finds the events of each family (else the test below would
    pass on nothing)."""
    kinds = recorded_kinds()
    expected = {"login.password", "login.totp", "login.backup_code", "invite.accepted",
                "login.link", "admin.totp_reset", "group.member_added"}  # fmt: skip
    assert expected <= kinds
    assert len(kinds) > 60


def test_every_recorded_event_has_a_sentence_or_is_never_about_a_user() -> None:
    missing = recorded_kinds() - SENTENCES.keys() - NOT_ABOUT_A_USER
    assert missing == set(), f"events without a sentence in idp.services.activity: {missing}"


def test_every_sentence_belongs_to_an_event_the_code_records() -> None:
    stale = (SENTENCES.keys() | NOT_ABOUT_A_USER) - recorded_kinds()
    assert stale == set(), f"sentences for events nothing records: {stale}"


@pytest.mark.parametrize("kind", sorted(SENTENCES))
@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_each_event_reads_as_a_sentence(kind: str, outcome: str) -> None:
    event = AuditEvent(kind=kind, outcome=outcome, client_id="grafana-id",
                       details={"name": "Work laptop", "amr": ["swk", "user", "mfa"],
                                "group": "staff"})  # fmt: skip
    sentence = describe_event(event, {"grafana-id": "Grafana"})
    assert kind not in sentence
    assert "{" not in sentence
    assert "_" not in sentence
    assert sentence[0].isupper()


def test_the_sentences_name_the_app_the_method_and_the_passkey() -> None:
    names = {"grafana-id": "Grafana"}
    passkey_amr = {"amr": ["swk", "user", "mfa"]}
    signed_in = AuditEvent(kind="authorization.code_issued", outcome="success",
                           client_id="grafana-id", details=passkey_amr)  # fmt: skip
    assert describe_event(signed_in, names) == "You signed in to Grafana with a passkey"
    added = AuditEvent(kind="passkey.registered", outcome="success", details={"name": "Phone"})
    assert describe_event(added, names) == "You added a passkey named “Phone”"
    by_password = AuditEvent(kind="authorization.code_issued", outcome="success",
                             client_id="gone", details={"amr": ["pwd"]})  # fmt: skip
    assert describe_event(by_password, names) == "You signed in to gone with your password"


def test_a_sign_in_from_a_one_time_link_is_not_called_a_password_and_app_sign_in() -> None:
    # An invite, a login link and a backup code's recovery open a session of amr ["otp"] alone
    # (RFC 8176: a one-time password); the user who accepted an invite has no password and no
    # authenticator app, so "with your password and authenticator app" told them of methods
    # they never had.
    names = {"wiki-id": "Wiki"}
    by_link = AuditEvent(kind="authorization.code_issued", outcome="success",
                         client_id="wiki-id", details={"amr": ["otp"]})  # fmt: skip
    assert describe_event(by_link, names) == (
        "You signed in to Wiki with a one-time link or backup code"
    )
    two_steps = {"amr": ["pwd", "otp", "mfa"]}
    second_step = AuditEvent(kind="authorization.code_issued", outcome="success",
                             client_id="wiki-id", details=two_steps)  # fmt: skip
    assert describe_event(second_step, names) == (
        "You signed in to Wiki with your password and authenticator app"
    )
