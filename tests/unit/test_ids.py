"""Random identifiers (idp.models.base.random_id)."""

from __future__ import annotations

import pytest

from idp.models import base


def test_an_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """`idp clients delete -JY...` would read the id as an option (one id in 64)."""
    drawn = iter(["-JY_MxE3XWElgVabVgQp5NRn", "JY_MxE3XWElgVabVgQp5NRn"])
    monkeypatch.setattr(base.secrets, "token_urlsafe", lambda nbytes: next(drawn))
    assert base.random_id(18) == "JY_MxE3XWElgVabVgQp5NRn"


def test_ids_keep_their_entropy() -> None:
    ids = {base.random_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(value) == 22 and not value.startswith("-") for value in ids)
