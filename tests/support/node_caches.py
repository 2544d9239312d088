"""A node's caches held for a test that counts what a request sends once they are filled."""

from __future__ import annotations

import pytest
from flask import Flask

#: Longer than any test: what a test filled stays trusted until it ends.
HELD_SECONDS = 3600


def hold_node_caches(monkeypatch: pytest.MonkeyPatch, app: Flask) -> None:
    """The app's copies of client registrations, signing keys and the sign-in policy, trusted
    for ``HELD_SECONDS`` until the monkeypatch is undone, instead of ``client_cache_ttl``,
    ``key_cache_ttl`` and ``policy_cache_ttl`` (5 s each). A test that fills them and then
    counts a request's statements or Sessions would otherwise depend on the clock: on a loaded
    machine more than 5 s can pass in between, and the request then reads them again, as it
    should. Explicit invalidation (a client disabled, the policy saved) still applies."""
    container = app.extensions["idp"]
    monkeypatch.setattr(container.client_cache, "ttl", HELD_SECONDS)
    monkeypatch.setattr(container.keys, "_cache_ttl", HELD_SECONDS)
    monkeypatch.setattr(container.policy_cache, "ttl", HELD_SECONDS)
