"""The circuit breaker in front of Redis (idp.services.dependencies.CircuitBreaker;
docs/operations.md, "Redis"): after a failure it refuses until its time has passed, then admits one
probe, whose answer closes it. Its clock is a counter the test moves."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from idp.redis_client import BREAKER_OPEN_SECONDS, redis_breaker
from idp.services.dependencies import (
    CircuitBreaker,
    DependencyUnavailableError,
    Refusals,
    redis_calls,
)
from idp.unavailable import RETRY_AFTER_SECONDS


class Clock:
    def __init__(self) -> None:
        self.seconds = 50.0

    def __call__(self) -> float:
        return self.seconds


def breaker() -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("redis", 5.0, clock), clock


def test_a_failure_opens_it_until_its_time_has_passed_then_one_probe_goes() -> None:
    circuit, clock = breaker()
    assert circuit.admit()
    assert circuit.admit()
    circuit.failed("TimeoutError")
    assert not circuit.closed
    clock.seconds += 4.9
    assert not circuit.admit()
    clock.seconds += 0.1
    assert circuit.admit()  # the probe
    assert not circuit.admit()  # nobody else while it is out
    circuit.failed("TimeoutError")  # Redis still silent: open again, from now
    clock.seconds += 4.9
    assert not circuit.admit()
    clock.seconds += 0.1
    assert circuit.admit()
    circuit.succeeded()
    assert circuit.closed
    assert circuit.admit()
    assert circuit.admit()


def test_a_probe_that_never_reports_back_does_not_keep_it_shut() -> None:
    circuit, clock = breaker()
    circuit.failed("ConnectionError")
    clock.seconds += 5
    assert circuit.admit()  # its thread ends without a word (an error that is not Redis's)
    clock.seconds += 5
    assert circuit.admit()


def test_of_many_threads_after_its_time_exactly_one_probes() -> None:
    circuit, clock = breaker()
    circuit.failed("TimeoutError")
    clock.seconds += 5
    start = threading.Barrier(16)

    def admitted() -> bool:
        start.wait()
        return circuit.admit()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: admitted(), range(16)))
    assert answers.count(True) == 1


def test_redis_calls_refuse_at_once_while_open_naming_the_failure() -> None:
    circuit, _ = breaker()
    with pytest.raises(DependencyUnavailableError) as failure, redis_calls(circuit):
        raise TimeoutError("Timeout reading from 127.0.0.1:6379")
    assert failure.value.reason == "TimeoutError"
    assert not circuit.closed
    ran = []
    with pytest.raises(DependencyUnavailableError) as refusal, redis_calls(circuit):
        ran.append(True)
    assert ran == []
    assert refusal.value.reason == "TimeoutError"
    assert refusal.value.__cause__ is None


def test_an_error_reply_is_a_refusal_but_proves_redis_answers() -> None:
    circuit, clock = breaker()
    circuit.failed("ConnectionError")
    clock.seconds += 5
    with pytest.raises(DependencyUnavailableError), redis_calls(circuit):
        raise ResponseError("READONLY You can't write against a read only replica.")
    assert circuit.closed


def test_a_connection_refused_opens_it_and_an_answer_closes_it() -> None:
    circuit, clock = breaker()
    with pytest.raises(DependencyUnavailableError), redis_calls(circuit):
        raise ConnectionError("Connection refused")
    clock.seconds += 5
    with redis_calls(circuit):
        pass
    assert circuit.closed


def test_the_breaker_stays_open_as_long_as_the_refusal_says_to_wait() -> None:
    """A client that waits the ``Retry-After`` of the 503 finds the breaker ready to probe."""
    assert BREAKER_OPEN_SECONDS == RETRY_AFTER_SECONDS
    assert redis_breaker().open_for == BREAKER_OPEN_SECONDS


def test_refusals_are_audited_once_per_window_with_the_count_since_the_last_row() -> None:
    circuit, clock = breaker()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    circuit.failed("TimeoutError")
    first = circuit.refused("login.login", start)
    assert first == Refusals(1, start, {"login.login": 1})
    for second in range(1, 40):
        clock.seconds = 50.0 + second / 10  # within the 5 s since the row
        assert circuit.refused("login.passkey_options", start + timedelta(seconds=second)) is None
    clock.seconds = 55.0  # the breaker's 5 s since the row
    at = start + timedelta(seconds=40)
    assert circuit.refused("login.login", at) == Refusals(
        40, start + timedelta(seconds=1), {"login.passkey_options": 39, "login.login": 1}
    )
    assert circuit.refused("signup.start", at) is None

    # The outage ends: its last window's tally goes (into the log), the next outage starts anew.
    circuit.succeeded()
    later = at + timedelta(hours=1)
    assert circuit.refused("signup.start", later) == Refusals(1, later, {"signup.start": 1})
