"""Password hashing with Argon2id (OWASP Password Storage Cheat Sheet parameters)."""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.errors import DomainError

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
        # Verifying unknown accounts against this keeps timing similar for known and unknown
        # emails (account-enumeration safe).
        self._dummy_hash = self._hasher.hash("idp-dummy-password-for-timing")
        # At most ``hashes_at_once`` Argon2id computations in this process; a burst of sign-ins
        # waits its turn. Each fills ``memory_kib`` and reads it back block by block, at indexes
        # its own data picks (RFC 9106 3.4): with more of them than cores, the scheduler
        # interleaves them on a core, each evicts the others' blocks from the caches and every
        # hash costs more CPU (about 30 % more with four per core, docs/performance.md). Waiting
        # instead keeps the throughput (the cores were busy either way) and bounds the memory.
        self._hashing = threading.BoundedSemaphore(hashes_at_once)

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
        with self._hashing:
            return self._hasher.hash(normalised(password))

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
                self._verify_quietly(self._dummy_hash, candidate)
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
            with self._hashing:
                return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
