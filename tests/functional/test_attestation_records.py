"""Which passkeys a deployment's attestation roots verified (docs/admins.md, "Verified
attestation"): a passkey remembers the root its registration's attestation chained to (WebAuthn
L3 7.1 steps 21 to 23), none for one registered without roots, and the console's page of a user
says which of their passkeys the roots configured now vouch for. On SQLite and PostgreSQL, the
roots set and changed on the running app (``trusting``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from flask import Flask

from idp.composition import container, services
from idp.extensions import db
from idp.models import AuditEvent, Passkey
from idp.services.attestation import root_fingerprint
from tests.functional.test_admin_policy import YUBIKEY_5, password_browser
from tests.functional.test_attestation_roots import VENDOR, genuine
from tests.support.admin import passkey_browser
from tests.support.attestation_ca import root_ca
from tests.support.authenticator import SoftAuthenticator
from tests.support.certificates import Issued
from tests.support.factories import create_user, rows
from tests.support.passkey_flow import PasskeyPages

#: Another vendor, whose root replaces VENDOR's.
OTHER_VENDOR = root_ca("Other Vendor Root")


@contextmanager
def trusting(app: Flask, *roots: Issued) -> Iterator[None]:
    """Inside the block, ``app`` requires attestation chaining to ``roots`` (as the
    ``webauthn_attestation_roots`` file would after a restart)."""
    held = container(app)
    previous = held.relying_party
    held.relying_party = replace(previous, attestation_roots=tuple(r.pem for r in roots))
    try:
        yield
    finally:
        held.relying_party = previous


def attestation_of(page: str, credential_id: str) -> str | None:
    """What the console's user page says of the passkey's attestation (None: nothing)."""
    found = re.search(rf'data-credential-id="{re.escape(credential_id)}">(.*?)</li>', page, re.S)
    assert found is not None, credential_id
    said = re.search(r'<span data-attestation="[^"]*">([^<]*)</span>', found.group(1))
    return said.group(1) if said else None


def unattested_passkey(app: Flask) -> PasskeyPages:
    """A user who added a passkey while no roots were set, signed in with it (so that adding
    another is allowed: the step-up is as strong as the strongest method)."""
    pages = password_browser(app, create_user(app))
    plain = SoftAuthenticator(aaguid=YUBIKEY_5)
    assert pages.add_passkey(plain).status_code == 201
    assert pages.sign_in_with_passkey(plain).status_code == 200
    return pages


@pytest.mark.postgres
def test_a_passkey_remembers_the_root_its_attestation_chained_to(storage_app: Flask) -> None:
    """Registered without roots: none recorded, not verified; registered while they are set:
    the fingerprint of the root its chain ended at, in the row and in the audit event."""
    pages = unattested_passkey(storage_app)
    with trusting(storage_app, OTHER_VENDOR, VENDOR):
        assert pages.add_passkey(genuine()).status_code == 201
    before, after = sorted(rows(storage_app, Passkey), key=lambda p: p.created_at)
    assert before.attestation_root is None
    assert after.attestation_root == root_fingerprint(VENDOR.certificate)
    registered = rows(storage_app, AuditEvent, AuditEvent.kind == "passkey.registered")
    recorded = {e.details["credential_id"]: e.details["attestation_root"] for e in registered}
    assert recorded == {before.credential_id: None, after.credential_id: after.attestation_root}


@pytest.mark.postgres
def test_the_console_says_which_passkeys_the_configured_roots_verified(storage_app: Flask) -> None:
    """A user with a passkey from before the roots and one they verified: the console's page
    says so of each; once the roots are another vendor's, the verified one reads as attested by
    a root no longer configured; without roots, the unverified one says nothing of attestation."""
    pages = unattested_passkey(storage_app)
    with trusting(storage_app, VENDOR):
        assert pages.add_passkey(genuine()).status_code == 201
        admin = passkey_browser(storage_app, "root@example.com", authenticator=genuine())
    old, new = sorted(
        rows(storage_app, Passkey, Passkey.user_id != admin.user.id), key=lambda p: p.created_at
    )
    address = f"/admin/users/{old.user_id}"
    for roots, said_of_old, said_of_new in (
        ((VENDOR,), "attestation not verified", "attestation verified"),
        ((OTHER_VENDOR,), "attestation not verified", "attested by a root no longer configured"),
        ((), None, "attested by a root no longer configured"),
    ):
        with trusting(storage_app, *roots):
            page = admin.browser.get(address)
        assert page.status_code == 200
        assert attestation_of(page.text, old.credential_id) == said_of_old, roots
        assert attestation_of(page.text, new.credential_id) == said_of_new, roots


@pytest.mark.postgres
def test_the_search_for_unverified_passkeys_runs_on_each_database(storage_app: Flask) -> None:
    """``UserDirectory.each_batch(unverified_by=...)`` (``idp users list --unverified-passkeys``)
    on SQLite and PostgreSQL: a user with a passkey of no recorded root or of another root is
    found; one whose passkeys the given roots verified, or who has none, is not."""
    verified, moved = (
        root_fingerprint(VENDOR.certificate),
        root_fingerprint(OTHER_VENDOR.certificate),
    )
    recorded = {"old@example.com": [None], "verified@example.com": [verified],
                "moved@example.com": [verified, moved], "none@example.com": []}  # fmt: skip
    with storage_app.app_context():
        for email, roots in recorded.items():
            user = create_user(storage_app, email)
            for number, root in enumerate(roots):
                db.session.add(Passkey(credential_id=f"{email}-{number}", user_id=user.id,
                                       public_key=b"k", sign_count=0, name=f"Key {number}",
                                       attestation_root=root))  # fmt: skip
        db.session.commit()
        batches = services().user_admin("cli", "cli").each_batch("", frozenset({verified}))
        assert [[u.email for u in batch] for batch in batches] == [
            ["moved@example.com", "old@example.com"]
        ]
        db.session.rollback()
