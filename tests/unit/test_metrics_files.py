"""idp.metrics_files: the metrics files' blocks allocated up front, and what a file system
without ``fallocate`` gets (tests/functional/test_metrics_full_disk.py has the full disk)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from idp import metrics_files


def test_a_file_system_without_fallocate_gets_the_file_grown_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(_descriptor: int, _offset: int, _length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(metrics_files.os, "posix_fallocate", unsupported)
    made = tmp_path / "counter_1.db"
    metrics_files._allocate(str(made), 65536)
    assert made.stat().st_size == 65536


def test_a_full_file_system_leaves_no_empty_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_descriptor: int, _offset: int, _length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics_files.os, "posix_fallocate", full)
    made = tmp_path / "counter_1.db"
    with pytest.raises(OSError, match="No space"):
        metrics_files._allocate(str(made), 65536)
    assert not made.exists()
