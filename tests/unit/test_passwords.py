"""Argon2id password hashing: format, verification, rehash on parameter change, length policy."""

from __future__ import annotations

import multiprocessing
import threading
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from idp.services.passwords import MAX_LENGTH, MIN_LENGTH, PasswordPolicyError, PasswordService

PASSWORD = "correct horse battery staple"


def service(memory_kib: int = 1024, time_cost: int = 1) -> PasswordService:
    # Small parameters keep the tests fast; the OWASP defaults live in settings.
    return PasswordService(memory_kib=memory_kib, time_cost=time_cost, parallelism=1)


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    hashed = service(memory_kib=2048, time_cost=2).hash(PASSWORD)
    assert hashed.startswith("$argon2id$")
    assert "m=2048,t=2,p=1" in hashed
    assert PASSWORD not in hashed


def test_same_password_hashes_differently_each_time() -> None:
    passwords = service()
    assert passwords.hash(PASSWORD) != passwords.hash(PASSWORD)  # random salt


def test_correct_password_verifies() -> None:
    passwords = service()
    check = passwords.verify(passwords.hash(PASSWORD), PASSWORD)
    assert check.ok is True
    assert check.needs_rehash is False


@pytest.mark.parametrize("attempt", ["correct horse battery stapl", "", PASSWORD.upper()])
def test_wrong_password_does_not_verify(attempt: str) -> None:
    passwords = service()
    assert passwords.verify(passwords.hash(PASSWORD), attempt).ok is False


def test_unknown_user_without_hash_does_not_verify() -> None:
    check = service().verify(None, PASSWORD)
    assert check.ok is False
    assert check.needs_rehash is False


def test_dummy_password_used_for_timing_does_not_verify_unknown_users() -> None:
    assert service().verify(None, "idp-dummy-password-for-timing").ok is False


class _CountingHasher(PasswordHasher):
    """argon2-cffi's hasher, counting the hashes it computes."""

    hashes = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)


def _counted(passwords: PasswordService) -> _CountingHasher:
    counting = _CountingHasher(memory_cost=1024, time_cost=1, parallelism=1)
    passwords._hasher = counting
    return counting


def test_the_stand_in_hash_for_no_account_is_computed_once_when_first_needed() -> None:
    """Building the service hashes nothing (an ``idp`` command never verifies a password); the
    first password for no account computes the stand-in, and every later one reuses it, so that
    each costs one verification, as a known account's does."""
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1)
    counting = _counted(passwords)
    assert passwords._stand_in_hash is None
    assert passwords.verify(None, PASSWORD).ok is False
    assert counting.hashes == 1
    stand_in = passwords._stand_in_hash
    assert passwords.verify(None, PASSWORD).ok is False
    assert passwords.verify(None, "another password").ok is False
    assert (counting.hashes, passwords._stand_in_hash) == (1, stand_in)


def test_warming_computes_the_stand_in_hash_before_the_first_sign_in() -> None:
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1)
    counting = _counted(passwords)
    passwords.warm()
    assert counting.hashes == 1
    assert passwords.verify(None, PASSWORD).ok is False
    passwords.warm()
    assert counting.hashes == 1


@pytest.mark.parametrize("stored", ["", "not-a-hash", "$argon2id$v=19$m=1024,t=1,p=1$broken"])
def test_malformed_stored_hash_does_not_verify(stored: str) -> None:
    assert service().verify(stored, PASSWORD).ok is False


def test_rehash_is_flagged_when_memory_cost_rises() -> None:
    old_hash = service(memory_kib=1024).hash(PASSWORD)
    check = service(memory_kib=2048).verify(old_hash, PASSWORD)
    assert check.ok is True
    assert check.needs_rehash is True


def test_rehash_is_flagged_when_time_cost_rises() -> None:
    old_hash = service(time_cost=1).hash(PASSWORD)
    assert service(time_cost=2).verify(old_hash, PASSWORD).needs_rehash is True


def test_wrong_password_never_asks_for_rehash() -> None:
    old_hash = service(memory_kib=1024).hash(PASSWORD)
    check = service(memory_kib=2048).verify(old_hash, "wrong password")
    assert check.ok is False
    assert check.needs_rehash is False


def test_password_shorter_than_minimum_is_refused() -> None:
    with pytest.raises(PasswordPolicyError, match=f"at least {MIN_LENGTH}"):
        service().hash("x" * (MIN_LENGTH - 1))


def test_password_of_minimum_length_is_accepted() -> None:
    passwords = service()
    short = "x" * MIN_LENGTH
    assert passwords.verify(passwords.hash(short), short).ok is True


def test_passphrase_of_64_characters_is_accepted() -> None:
    # NIST SP 800-63B 5.1.1.2: verifiers SHOULD permit at least 64 characters.
    passwords = service()
    phrase = "a long passphrase with spaces " * 2 + "four"
    assert len(phrase) == 64
    assert passwords.verify(passwords.hash(phrase), phrase).ok is True


def test_very_long_password_is_refused_when_set() -> None:
    with pytest.raises(PasswordPolicyError, match=f"at most {MAX_LENGTH}"):
        service().hash("x" * (MAX_LENGTH + 1))


def test_very_long_password_is_refused_when_verified() -> None:
    passwords = service()
    stored = passwords.hash("x" * MAX_LENGTH)
    assert passwords.verify(stored, "x" * MAX_LENGTH).ok is True
    assert passwords.verify(stored, "x" * (MAX_LENGTH + 1)).ok is False
    assert passwords.verify(stored, "x" * 1_000_000).ok is False


class _HeldHasher:
    """Stands in for argon2-cffi's hasher: each verification counts itself in, says so, and
    stays inside until the test lets it go."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()
        self.entered = threading.Semaphore(0)
        self.go = threading.Event()
        self.threads: set[int] = set()
        self.native_ids: set[int] = set()

    def verify(self, stored_hash: str, password: str) -> bool:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.native_ids.add(threading.get_native_id())
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        assert self.go.wait(timeout=30)
        with self.lock:
            self.inside -= 1
        return True

    def check_needs_rehash(self, stored_hash: str) -> bool:
        return False


def _waiting_for_a_turn(passwords: PasswordService) -> int:
    # The computations handed over and not started: the hashing threads' queue.
    return passwords._hashing._threads()._work_queue.qsize()


@pytest.mark.parametrize("at_once", [1, 2])
def test_no_more_argon2_computations_run_at_once_than_configured(at_once: int) -> None:
    """A burst of sign-ins waits its turn instead of interleaving memory-hard hashes on one core
    (PasswordService: each would evict the others' memory and cost more CPU)."""
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1, hashes_at_once=at_once)
    stored = passwords.hash(PASSWORD)
    held = _HeldHasher()
    passwords._hasher = held  # type: ignore[assignment]
    callers = [
        threading.Thread(target=passwords.verify, args=(stored, PASSWORD))
        for _ in range(at_once + 2)
    ]
    try:
        for caller in callers:
            caller.start()
        for _ in range(at_once):
            assert held.entered.acquire(timeout=30)
        # The others are parked at the limit, not inside: wait until both are seen waiting.
        deadline = time.monotonic() + 30
        while _waiting_for_a_turn(passwords) < 2:
            assert held.inside == at_once, "a computation started past the limit"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert held.inside == at_once
    finally:
        held.go.set()
    for caller in callers:
        caller.join(timeout=30)
    assert held.most_inside == at_once


def test_every_computation_runs_on_the_processes_hashing_threads() -> None:
    """Six request threads, one hashing thread: each request thread would otherwise keep the
    hash's memory in an allocator arena of its own (HashingThreads)."""
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1, hashes_at_once=1)
    stored = passwords.hash(PASSWORD)
    held = _HeldHasher()
    held.go.set()
    passwords._hasher = held  # type: ignore[assignment]
    callers = [threading.Thread(target=passwords.verify, args=(stored, PASSWORD)) for _ in range(6)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    assert held.most_inside == 1
    assert len(held.threads) == 1
    assert held.threads.isdisjoint(caller.ident for caller in callers)
    assert held.threads.isdisjoint({threading.get_ident()})


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(),
    reason="a thread's kernel name lives in /proc/self/task/TID/comm, which only Linux has; "
    "elsewhere idp leaves the hashing threads unnamed by design (passwords._name_this_thread)",
)
def test_the_hashing_threads_are_named_argon2_in_the_kernel() -> None:
    """``top -H`` and bench/threads.py tell the hashing threads from the request threads."""
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1, hashes_at_once=1)
    passwords.warm()
    held = _HeldHasher()
    held.go.set()
    passwords._hasher = held  # type: ignore[assignment]
    passwords.verify(passwords._stand_in_hash, PASSWORD)
    [native_id] = held.native_ids
    assert Path(f"/proc/self/task/{native_id}/comm").read_text().strip() == "argon2"


def _verifies_in_a_child(passwords: PasswordService, stored: str, answers: Any) -> None:
    answers.put(passwords.verify(stored, PASSWORD).ok)


def test_a_forked_worker_starts_hashing_threads_of_its_own() -> None:
    """A server that builds the application before forking its workers (gunicorn --preload):
    the parent's hashing threads are not in the child, which must not wait for them forever."""
    passwords = PasswordService(memory_kib=1024, time_cost=1, parallelism=1)
    stored = passwords.hash(PASSWORD)  # the parent's threads are started
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=_verifies_in_a_child, args=(passwords, stored, answers))
    child.start()
    try:
        assert answers.get(timeout=30) is True
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0


# -- Unicode normalisation (NIST SP 800-63B 5.1.1.2) ----------------------------------------------
COMPOSED = unicodedata.normalize("NFC", "crème brûlée façade")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def counted(passwords: PasswordService) -> list[str]:
    """The hash computations ``passwords`` makes from now on, one entry each."""
    made: list[str] = []
    verify = passwords._verify_quietly

    def counting(stored: str, password: str) -> bool:
        made.append(password)
        return verify(stored, password)

    passwords._verify_quietly = counting  # type: ignore[method-assign]
    return made


@pytest.mark.parametrize(
    ("chosen", "typed"),
    [(COMPOSED, DECOMPOSED), (DECOMPOSED, COMPOSED), ("ﬁne dining please", "fine dining please")],
)
def test_a_password_is_the_same_in_every_unicode_form(chosen: str, typed: str) -> None:
    """Accents arriving composed or decomposed, a ligature or its letters: one password (NFKC)."""
    assert chosen != typed
    passwords = service()
    check = passwords.verify(passwords.hash(chosen), typed)
    assert (check.ok, check.needs_rehash) == (True, False)


def test_a_hash_of_a_password_as_typed_before_normalisation_still_verifies_and_is_renewed() -> None:
    passwords = service()
    legacy = PasswordHasher(memory_cost=1024, time_cost=1).hash(DECOMPOSED)  # before normalising
    check = passwords.verify(legacy, DECOMPOSED)
    assert (check.ok, check.needs_rehash) == (True, True)
    renewed = passwords.rehash(DECOMPOSED)
    assert passwords.verify(renewed, COMPOSED).ok is True


def test_a_password_in_a_form_of_its_own_costs_two_computations_whatever_the_account() -> None:
    """No timing oracle: right, wrong, or no account at all, the same count for the same input."""
    passwords = service()
    stored = passwords.hash(COMPOSED)
    made = counted(passwords)
    assert passwords.verify(stored, DECOMPOSED + "x").ok is False
    assert passwords.verify(None, DECOMPOSED).ok is False
    assert len(made) == 4
    made.clear()
    assert passwords.verify(stored, "a plain wrong one").ok is False
    assert passwords.verify(None, "a plain wrong one").ok is False
    assert len(made) == 2


def test_the_policy_counts_the_normal_form() -> None:
    # "ﬀ" is one character and two letters: seven characters typed, eight once normalised.
    service().check_policy("ﬀ" + "abcdef")


def test_a_password_the_policy_accepts_can_always_sign_in() -> None:
    """The policy bounds the password as typed, as ``verify`` does before normalising: one that
    is short once normalised but long as typed was accepted and could never sign in."""
    decomposed = unicodedata.normalize("NFD", "é" * 600)  # 1,200 characters typed, 600 normal
    with pytest.raises(PasswordPolicyError, match=f"at most {MAX_LENGTH}"):
        service().check_policy(decomposed)
