"""The admin API fuzzed against its own OpenAPI document (docs/api.md) with schemathesis: requests
generated from the document, valid and invalid, sent to the real application on a real database
with a token of every scope, each answer checked against what the document declares.

Deterministic (a fixed seed, derandomized, no example database) and bounded: a few cases per
operation, so that it runs in the suite in seconds; the test fails if any operation got no case.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, GenerationMode, Response

from idp.api.core import OPERATIONS
from idp.api.openapi import document, openapi_path, problems_of
from idp.api.problems import MEDIA_TYPE, TYPES
from tests.conftest import _empty_tables
from tests.functional.test_api import issue
from tests.support.factories import create_client, create_user

#: Cases per operation and generation mode in the fuzzing phase, beside the coverage phase's
#: boundary cases (schemathesis builds those from the schema: the longest strings, each enum
#: value, each wrong type).
MAX_EXAMPLES = 5
SEED = 20261206

#: What a request the document calls valid may still be refused for: a rule of a service about
#: a value (docs/api.md, 422 invalid-value: the models check shape and size, the services the
#: rest), the resource's state (404, 409, 412) or an opaque cursor that is not one of ours. Never
#: the schema's own validation: invalid-body, malformed-json, unsupported-media-type.
_VALID_REFUSALS = {
    "not-found",
    "conflict",
    "last-admin",
    "group-in-use",
    "precondition-failed",
    "invalid-value",
}


#: The problem types each operation declares (idp.api.openapi.problems_of).
_PROBLEMS = {f"{op.method} {openapi_path(op.rule)}": problems_of(op) for op in OPERATIONS}


def problem_details_match_their_status(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every error is RFC 9457 problem details of a type of its own status that the document
    declares for the operation."""
    if response.status_code < 400:
        return
    media_type = response.headers.get("content-type", [""])[0].split(";")[0]
    assert media_type == MEDIA_TYPE, f"{response.status_code} answered as {media_type}"
    body = response.json()
    slug = str(body.get("type", "")).rsplit("/", 1)[-1]
    assert slug in TYPES, f"undocumented problem type {body.get('type')!r}"
    assert TYPES[slug].status == response.status_code == body["status"], body
    declared = _PROBLEMS.get(f"{case.method} {case.path}")
    if declared is not None:  # None: a method the path does not serve (405)
        assert slug in declared, f"{slug} is not declared for {case.method} {case.path}"


def valid_request_is_not_refused_as_invalid(
    ctx: CheckContext, response: Response, case: Case
) -> None:
    """A request the document calls valid is never refused by the document's own validation:
    if it is, the schema does not describe what the API accepts."""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if response.status_code < 400:
        return
    slug = str(response.json().get("type", "")).rsplit("/", 1)[-1]
    if slug == "invalid-query" and "cursor" in (case.query or {}):
        return  # an opaque cursor (docs/api.md): a generated one is rarely ours
    assert slug in _VALID_REFUSALS, f"a valid request refused as {slug}"


def _config(*, stateful: bool = False) -> schemathesis.Config:
    expected_refusals = [400, 401, 403, 404, 409, 413, 415, 422, 428]
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "no-shrink": True,
            },
            "phases": {
                "examples": {"enabled": False},
                "stateful": {"enabled": stateful},
            },
            "checks": {
                "positive_data_acceptance": {"enabled": False},
                "negative_data_rejection": {"expected-statuses": expected_refusals},
                "missing_required_header": {"expected-statuses": expected_refusals},
                # A request with a made-up token must not be served: the probes of this check are
                # failed authentications, past 50 an hour answered 429 (docs/api.md), which the
                # check does not take. test_api.py::test_each_operation_needs_its_scope and the
                # 401 tests there hold each operation to its token.
                "ignored_auth": {"enabled": False},
            },
        }
    )


#: The document as the API serves it (idp.api.openapi builds it from the operations' records, no
#: application needed): each operation is a test of its own, every case sent to the test's app.
schema = schemathesis.openapi.from_dict(document(), config=_config())


def _token_on(app: Flask) -> str:
    """A token of every scope, on ``app`` holding an admin, a user and a client."""
    create_user(app, email="admin@example.com", admin=True)
    create_user(app)
    create_client(app)
    return issue(app)


@pytest.fixture
def api_token(storage_app: Flask) -> str:
    return _token_on(storage_app)


@pytest.fixture
def cases(request: pytest.FixtureRequest) -> Iterator[list[Case]]:
    """The cases this operation's test sent: at the end there must be some."""
    sent: list[Case] = []
    yield sent
    assert sent, f"schemathesis generated no case for {request.node.name}"
    # Shown with -s: how many cases each operation got.
    print(f"{request.node.name}: {len(sent)} cases")


@schema.parametrize()
# Said here as well as in the config, so that no Hypothesis profile (its "ci" one, say) can make
# the run random or time-bound. The fixtures' app is the one each case is sent to, kept across the
# cases of one operation: the API's own state (what an earlier case created or deleted) is part
# of what is fuzzed.
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_its_document_says(
    case: Case, storage_app: Flask, api_token: str, cases: list[Case]
) -> None:
    cases.append(case)
    # Where the case is sent, and the probes of the checks that send requests of their own (the
    # same request without the token, say): the schema is loaded before any app exists.
    case.operation.app = case.operation.schema.app = storage_app
    case.call_and_validate(
        headers={"Authorization": f"Bearer {api_token}"},
        additional_checks=[
            problem_details_match_their_status,
            valid_request_is_not_refused_as_invalid,
        ],
    )


def test_the_fuzzing_covers_every_operation() -> None:
    """Each operation of the API is one of the tests above (and each of those fails without a
    case): an operation the document left out would go unfuzzed."""
    fuzzed = {op.ok().label for op in schema.get_all_operations()}
    assert fuzzed == {f"{op.method} {openapi_path(op.rule)}" for op in OPERATIONS}


#: Scenarios of the stateful run, each a chain of calls from a creation along the document's
#: links (read, change, rotate, delete the new resource), and the most steps in one.
SCENARIOS = 12
STEPS = 8


def test_created_resources_answer_as_the_document_links_them(app: Flask) -> None:
    """Create a client, a user or a group, then call what the document links its answer to
    (read, change with its ETag, rotate, disable, delete, add members), each answer checked as
    above: the ids and ETags the answers give are the ones the linked operations take. On
    SQLite only: the operations met PostgreSQL above, and the suite's time is shared."""
    linked = schemathesis.openapi.from_dict(document(), config=_config(stateful=True))
    linked.app = app
    steps: Counter[str] = Counter()
    served: Counter[str] = Counter()
    headers: dict[str, str] = {}

    class Scenario(linked.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from the same rows. Hypothesis runs a scenario's prefix
            # again to explore what follows it; had the rows of earlier scenarios stayed, the
            # same steps could be answered otherwise the second time (a name taken: 409), fill
            # other bundles, enable other rules, and Hypothesis stops the run as a strategy that
            # depends on external state (FlakyStrategyDefinition).
            _empty_tables(app)
            headers["Authorization"] = f"Bearer {_token_on(app)}"

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": headers}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            steps[f"{case.method} {case.path}"] += 1
            if response.status_code < 300:
                served[f"{case.method} {case.path}"] += 1
            case.validate_response(
                response,
                headers=headers,
                additional_checks=[
                    problem_details_match_their_status,
                    valid_request_is_not_refused_as_invalid,
                ],
                transport_kwargs=kwargs,
            )

    Scenario.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print("stateful steps:", dict(sorted(steps.items())), "served:", dict(sorted(served.items())))
    # Operations on one resource were served with the id (and ETag) a linked answer gave: most
    # generated creations are refused by a rule (a redirect URI must be https, an email real),
    # the lists' answers link to what the fixtures made. Which ones the seeded run reaches moves
    # with the document's schemas (a new member changes what is generated), so the bar is three
    # distinct ones, not a list of them.
    on_one = {label for label in served if label.count("{") == 1}
    assert len(on_one) >= 3, served
