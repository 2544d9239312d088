"""Seed users with a password and a confirmed TOTP authenticator straight into idp's database.

Run by the benchmark with the server's environment (``python -m bench.seed COUNT PASSWORD``);
prints ``[[email, totp_secret], ...]`` as JSON. Each password + TOTP sign-in needs a user of its
own: a TOTP step is accepted once per user (RFC 6238 5.2), and the benchmark signs in faster than
one step per 30 seconds. One Argon2id hash is computed and shared, so seeding stays quick; the
server still verifies it on every sign-in.
"""

from __future__ import annotations

import json
import secrets
import sys

import pyotp

from idp import create_app
from idp.extensions import db
from idp.models import TotpCredential, User
from idp.models.base import utcnow


def main() -> None:
    count, password = int(sys.argv[1]), sys.argv[2]
    app = create_app()
    runtime = app.extensions["idp"]
    seeded = []
    with app.app_context():
        password_hash = runtime.passwords.hash(password)
        now = utcnow()
        tag = secrets.token_hex(4)
        for i in range(count):
            user = User(
                email=f"totp-{tag}-{i}@example.com", name=f"TOTP {i}", password_hash=password_hash
            )
            db.session.add(user)
            db.session.flush()
            secret = pyotp.random_base32(length=32)
            db.session.add(
                TotpCredential(
                    user_id=user.id,
                    secret_encrypted=runtime.totp_fernet.encrypt(secret.encode()).decode(),
                    confirmed_at=now,
                )
            )
            seeded.append([user.email, secret])
        db.session.commit()
    print(json.dumps(seeded))


if __name__ == "__main__":
    main()
