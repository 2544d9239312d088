"""The code grant's transaction (its spend and the tokens it issues, idp.oidc.rotation) is
committed once the tokens are recorded, before the ID token is signed: on SQLite every other
writer of every worker waits while a write transaction is open, and the ID token's claims and
RS256 signature were the longest piece of it (docs/performance-rounds.md, "The thirteenth
round")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from idp.oidc.server import OpenIDCodeWithSession
from tests.conftest import sqlite_app
from tests.support.factories import create_client, create_user
from tests.support.flow import RelyingParty
from tests.support.node_caches import hold_node_caches


def test_the_code_grant_commits_its_tokens_before_the_id_token_is_signed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Flask = sqlite_app(tmp_path)
    user = create_user(app)
    rp = RelyingParty(app.test_client(), create_client(app))
    # The first exchange reads the client into the process's cache (idp.services.client_cache);
    # the next one opens no Session and spends its code in a transaction apart. The cache holds
    # it until the test ends, however long a loaded machine takes in between.
    hold_node_caches(monkeypatch, app)
    rp.tokens_for(user)
    code = rp.obtain_code(user)["code"]
    seen: dict[str, Any] = {}
    encode = OpenIDCodeWithSession.encode_id_token

    def encode_while_looking(self: OpenIDCodeWithSession, token: Any, request: Any) -> Any:
        # Another connection, as another worker's: the write lock is free (SQLite's busy
        # timeout 0, so a held lock answers "database is locked" at once) and the tokens are
        # visible to it, committed.
        other = sqlite3.connect(tmp_path / "idp.db", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            seen["lock"] = "free"
        except sqlite3.OperationalError as error:
            seen["lock"] = str(error)
        seen["tokens"] = other.execute("SELECT count(*) FROM access_tokens").fetchone()[0]
        other.close()
        return encode(self, token, request)

    monkeypatch.setattr(OpenIDCodeWithSession, "encode_id_token", encode_while_looking)
    answer = rp.exchange(code)
    assert answer.status_code == 200, answer.text
    assert "id_token" in answer.get_json()
    assert seen == {"lock": "free", "tokens": 2}
