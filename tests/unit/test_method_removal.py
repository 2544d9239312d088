"""The rules that keep a way in, decided without Flask (idp.services.method_removal)."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from idp.models import Passkey, User
from idp.models.base import utcnow
from idp.services.method_removal import MethodRemoval, Refusal
from idp.services.sign_in_policy import SignInPolicy

OPEN = SignInPolicy(passwords_allowed=True, signup_enabled=False)
PASSWORDLESS = SignInPolicy(passwords_allowed=False, signup_enabled=False)
ADMIN_PASSKEYS = SignInPolicy(
    passwords_allowed=True, signup_enabled=False, admin_passkey_required=True
)


def user(db: Session, *, password: bool, passkeys: int, admin: bool = False) -> User:
    person = User(email="ada@example.com", password_hash="hash" if password else None,
                  is_admin=admin)  # fmt: skip
    db.add(person)
    db.flush()
    for number in range(passkeys):
        db.add(Passkey(credential_id=f"cred-{number}", user_id=person.id, public_key=b"k",
                       name=f"Key {number}"))  # fmt: skip
    db.flush()
    return person


def first_passkey(db: Session) -> Passkey:
    passkey = db.get(Passkey, "cred-0")
    assert passkey is not None
    return passkey


@pytest.mark.parametrize(
    ("password", "passkeys", "policy", "refusal"),
    [
        # Another passkey is always a way in.
        (False, 2, OPEN, None),
        (False, 2, PASSWORDLESS, None),
        # A password is a way in only where the policy allows passwords.
        (True, 1, OPEN, None),
        (True, 1, PASSWORDLESS, Refusal.LAST_WAY_IN),
        (False, 1, OPEN, Refusal.LAST_WAY_IN),
    ],
)
def test_the_last_passkey_stays_unless_another_way_in_remains(
    db: Session, password: bool, passkeys: int, policy: SignInPolicy, refusal: Refusal | None
) -> None:
    person = user(db, password=password, passkeys=passkeys)
    assert MethodRemoval(db, policy).passkey_refusal(person, first_passkey(db)) is refusal


def test_an_admin_keeps_a_passkey_when_the_policy_requires_one(db: Session) -> None:
    admin = user(db, password=True, passkeys=1, admin=True)
    passkey = first_passkey(db)
    assert MethodRemoval(db, ADMIN_PASSKEYS).passkey_refusal(admin, passkey) is (
        Refusal.ADMIN_PASSKEY
    )
    # Without the policy, the admin's password is a way in like anyone's.
    assert MethodRemoval(db, OPEN).passkey_refusal(admin, passkey) is None


def test_an_admin_with_another_passkey_may_remove_one(db: Session) -> None:
    admin = user(db, password=False, passkeys=2, admin=True)
    assert MethodRemoval(db, ADMIN_PASSKEYS).passkey_refusal(admin, first_passkey(db)) is None


@pytest.mark.parametrize(("passkeys", "refusal"), [(1, None), (0, Refusal.LAST_WAY_IN)])
def test_going_passwordless_needs_a_passkey(
    db: Session, passkeys: int, refusal: Refusal | None
) -> None:
    person = user(db, password=True, passkeys=passkeys)
    assert MethodRemoval(db, OPEN).password_refusal(person) is refusal


def test_an_authenticator_app_is_never_the_last_way_in(db: Session) -> None:
    person = user(db, password=True, passkeys=0)
    assert MethodRemoval(db, OPEN).totp_refusal(person) is None


def flag(db: Session, credential_id: str) -> None:
    passkey = db.get(Passkey, credential_id)
    assert passkey is not None
    passkey.flagged_at = utcnow()
    db.flush()


def test_a_flagged_passkey_is_no_way_in(db: Session) -> None:
    """WebAuthn L3 6.1.1: a passkey flagged as a possible clone is refused at every sign-in, so
    it keeps no way in: the last working passkey stays, and a password may go only while a
    working passkey remains."""
    person = user(db, password=False, passkeys=2)
    flag(db, "cred-1")
    assert MethodRemoval(db, OPEN).passkey_refusal(person, first_passkey(db)) is (
        Refusal.LAST_WAY_IN
    )
    with_password = User(email="bo@example.com", password_hash="hash")
    db.add(with_password)
    db.flush()
    db.add(Passkey(credential_id="cred-bo", user_id=with_password.id, public_key=b"k", name="K"))
    db.flush()
    flag(db, "cred-bo")
    assert MethodRemoval(db, OPEN).password_refusal(with_password) is Refusal.LAST_WAY_IN


def test_a_flagged_passkey_may_always_be_removed(db: Session) -> None:
    """Removing it takes no way in away, and it is how its owner registers the authenticator
    again; even an admin's only passkey where the policy requires one."""
    admin = user(db, password=False, passkeys=1, admin=True)
    flag(db, "cred-0")
    assert MethodRemoval(db, ADMIN_PASSKEYS).passkey_refusal(admin, first_passkey(db)) is None
