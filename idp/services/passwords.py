"""Password hashing with Argon2id (OWASP Password Storage Cheat Sheet parameters)."""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.errors import DomainError

#: PEP 695 would say ``def run[T]``; Python 3.11 spells the type variable out.
T = TypeVar("T")

MIN_LENGTH = 8
# NIST SP 800-63B 5.1.1.2: allow at least 64 characters; we allow long passphrases but bound the
# input so that hashing cost cannot be abused.
MAX_LENGTH = 1024


def normalised(password: str) -> str:
    """NIST SP 800-63B 5.1.1.2: "the verifier SHOULD apply the Normalization Process for
    Stabilization of Strings using either the NFKC or NFKD normalization": the same passphrase
    typed where accents arrive composed (é) or decomposed (e and a combining accent) is the
    same password. NFKC, the form most keyboards already send."""
    return unicodedata.normalize("NFKC", password)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """zxcvbn's list of the 30,000 most common passwords (11,611 of them 8+ characters long).

    NIST SP 800-63B 5.1.1.2: compare new passwords against values known to be commonly used.
    """
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


class PasswordPolicyError(DomainError):
    """The new password breaks the policy; the message is shown to the user."""


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    needs_rehash: bool = False


class HashingThreads:
    """The threads that compute every Argon2id hash of this process, ``count`` of them; a
    request thread hands its computation over and waits for the result.

    At most ``count`` at once: a burst of sign-ins waits its turn. Each computation fills its
    memory (19 MiB with the default parameters) and reads it back block by block, at indexes its
    own data picks (RFC 9106 3.4): with more of them than cores, the scheduler interleaves them
    on a core, each evicts the others' blocks from the caches and every hash costs more CPU
    (about 30 % more with four per core, docs/performance.md). Waiting instead keeps the
    throughput (the cores were busy either way).

    On threads of their own because the C allocator keeps memory per thread: glibc gives each
    thread that allocates at once with another an arena of its own, and an arena keeps the
    hash's freed memory for its next allocation. Computed on the request threads, every one of
    them came to hold its own 19 MiB (a worker with 4 threads: 76 MiB for one hash at a time),
    and each thread's first hash paid to fault in and zero its memory (two to three times the
    CPU of a hash, docs/performance.md). Here ``count`` threads hold it, in place after the
    first hash of the process.

    Threads do not survive a fork: a process that finds threads started by its parent starts
    its own.

    Each is named ``argon2`` in the kernel too (``top -H``, ``ps -L``, bench/threads.py): a
    hash is the largest share of a password sign-in's CPU (docs/performance.md), and the
    operator who looks at a busy node sees which threads it is in.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._starting = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def run(self, computation: Callable[..., T], *args: str) -> T:
        return self._threads().submit(computation, *args).result()

    def _threads(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is not None and self._pid == os.getpid():
            return executor
        with self._starting:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    self._count,
                    thread_name_prefix=HASHING_THREAD_NAME,
                    initializer=_name_this_thread,
                )
                self._pid = os.getpid()
            return self._executor


def _name_this_thread() -> None:
    """The calling thread's name in the kernel (Linux: ``/proc/self/task/TID/comm``, which
    Python 3.11 leaves as the process's). Best effort: elsewhere, or where ``/proc`` is read-only,
    the thread keeps its name and hashes the same."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(HASHING_THREAD_NAME)
    except OSError:
        pass


#: What ``top -H`` calls the hashing threads.
HASHING_THREAD_NAME = "argon2"

_hashing_threads: dict[int, HashingThreads] = {}
_hashing_threads_lock = threading.Lock()


def hashing_threads(count: int) -> HashingThreads:
    """This process's ``count`` hashing threads, shared by every ``PasswordService`` that asks
    for as many (an application built again, as the tests do, finds them in place)."""
    with _hashing_threads_lock:
        return _hashing_threads.setdefault(count, HashingThreads(count))


class PasswordService:
    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, hashes_at_once: int = 1
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._hashing = hashing_threads(hashes_at_once)
        self._stand_in_hash: str | None = None

    def warm(self) -> None:
        """Compute now the stand-in hash a password for no account is verified against, so
        that such a sign-in costs what any other does (account-enumeration safe), from the
        first one on. Computed on a hashing thread: its memory is then in place before the first
        sign-in too (``HashingThreads``).

        A server's worker calls this as it starts (idp.wsgi). Everything else builds its
        application without paying for a hash it never verifies against: an ``idp`` command
        (the default parameters' hash was about a twentieth of its start) and the ``idp serve``
        process that starts the workers. Where it was not warmed (a test's application), the
        first such sign-in computes it first."""
        self._stand_in()

    def _stand_in(self) -> str:
        stand_in = self._stand_in_hash
        if stand_in is None:  # two threads may both compute it; either hash serves
            stand_in = self._hashing.run(self._hasher.hash, "idp-dummy-password-for-timing")
            self._stand_in_hash = stand_in
        return stand_in

    def hash(self, password: str) -> str:
        self.check_policy(password)
        return self._new_hash(password)

    def rehash(self, password: str) -> str:
        """A new hash of a password that just verified, under the current parameters.

        No policy check: the policy governs passwords being set (NIST SP 800-63B 5.1.1.2), and
        an upgrade on sign-in must not refuse (or crash on) a password chosen under an older one.
        """
        return self._new_hash(password)

    def _new_hash(self, password: str) -> str:
        return self._hashing.run(self._hasher.hash, normalised(password))

    def check_policy(self, password: str) -> None:
        if len(password) > MAX_LENGTH:  # as typed: what ``verify`` bounds before normalising
            raise PasswordPolicyError(f"Use at most {MAX_LENGTH} characters.")
        password = normalised(password)
        if len(password) < MIN_LENGTH:
            raise PasswordPolicyError(f"Use at least {MIN_LENGTH} characters.")
        if len(password) > MAX_LENGTH:
            raise PasswordPolicyError(f"Use at most {MAX_LENGTH} characters.")
        if password.lower() in common_passwords():
            raise PasswordPolicyError(
                "This password is one of the most common ones, which attackers try first. "
                "Choose another (a few unrelated words work well)."
            )

    def verify(self, stored_hash: str | None, password: str) -> PasswordCheck:
        """Check a password; with no stored hash, spend the same time and fail.

        The password is compared in its normal form (``normalised``), then, if it arrived in
        another, as typed: a hash made before idp normalised passwords holds that form, and a
        success through it is rehashed in the normal one. So a password typed in a form of its
        own costs two computations, whether it is right, wrong or of no account at all."""
        if len(password) > MAX_LENGTH:
            return PasswordCheck(ok=False)
        normal = normalised(password)
        candidates = (normal,) if normal == password else (normal, password)
        if not stored_hash:
            for candidate in candidates:
                self._verify_quietly(self._stand_in(), candidate)
            return PasswordCheck(ok=False)
        for as_typed, candidate in enumerate(candidates):
            if self._verify_quietly(stored_hash, candidate):
                return PasswordCheck(
                    ok=True,
                    needs_rehash=bool(as_typed) or self._hasher.check_needs_rehash(stored_hash),
                )
        return PasswordCheck(ok=False)

    def _verify_quietly(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hashing.run(self._hasher.verify, stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
