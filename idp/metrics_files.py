"""The workers' metrics files with their disk blocks allocated before they are written through
their memory mapping (idp.metrics; docs/operations.md, "SQLite: a full disk, or a read-only
file").

prometheus_client's multiprocess mode counts in a memory-mapped file per process and metric type,
made and grown with ``truncate``: a hole, whose pages get a block on disk only when first written.
On a full file system (the metrics directory is under ``/tmp``, on a host with one disk the
SQLite database's file system) the kernel cannot give a written page its block and answers with
SIGBUS, which kills the worker: every request in flight is cut, and the worker started instead
dies at its first new count. Here the file is allocated (``posix_fallocate``) before it is
mapped, and each growth too: a full file system is then an ``OSError`` where the file is made or
grown, before anything is written, which idp.metrics drops with the count (a full disk costs
counts, never a request).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any


class _AllocatingFile:
    """A metrics file whose ``truncate`` (prometheus_client grows the file with it) allocates the
    blocks up to the new size instead of leaving a hole."""

    __slots__ = ("_file",)

    def __init__(self, file: Any) -> None:
        self._file = file

    def fileno(self) -> int:
        fileno: int = self._file.fileno()
        return fileno

    def truncate(self, size: int) -> int:
        _fallocate(self._file.fileno(), size)
        return size

    def close(self) -> None:
        self._file.close()


#: What a file system without ``fallocate`` answers (glibc writes zeros itself for most of them):
#: its file is then grown as prometheus_client grows it, with a hole, as before.
_NOT_SUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


def _fallocate(descriptor: int, size: int) -> None:
    """The file's first ``size`` bytes allocated (the file extended to them if shorter)."""
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        if error.errno not in _NOT_SUPPORTED:
            raise
        if os.fstat(descriptor).st_size < size:
            os.ftruncate(descriptor, size)


def _allocate(filename: str, size: int) -> None:
    """Make ``filename`` if it is missing, its first ``size`` bytes (or all of it) allocated. A
    file made here that could not be allocated is removed again: a scrape reads every file of
    the directory, and an empty one is no metrics file (prometheus_client fails to read it)."""
    descriptor = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            _fallocate(descriptor, max(size, os.fstat(descriptor).st_size))
        except OSError:
            if os.fstat(descriptor).st_size == 0:
                with contextlib.suppress(OSError):
                    os.unlink(filename)
            raise
    finally:
        os.close(descriptor)


def allocate_files_up_front() -> None:
    """Make prometheus_client's multiprocess values use allocated files (the module's docstring),
    before this process counts anything. Nothing to do where the system has no
    ``posix_fallocate`` (not Linux), or in a prometheus_client without the class this wraps."""
    if not hasattr(os, "posix_fallocate"):
        return
    from prometheus_client import mmap_dict, values

    library: Any = values
    base: Any = getattr(library, "MmapedDict", None)
    initial: Any = getattr(mmap_dict, "_INITIAL_MMAP_SIZE", None)
    if base is None or not isinstance(initial, int) or getattr(base, "allocates", False):
        return

    class AllocatedMmapedDict(base):
        allocates = True
        _f: Any
        _capacity: int

        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                _allocate(filename, initial)  # before the base class maps and writes it
            super().__init__(filename, read_mode)
            if not read_mode:
                self._f = _AllocatingFile(self._f)

        def _init_value(self, key: str) -> None:
            # The base class doubles its capacity before it grows the file: a growth refused
            # (a full file system) leaves it as it was, the old mapping still the whole file.
            capacity = self._capacity
            try:
                super()._init_value(key)
            except BaseException:
                self._capacity = capacity
                raise

    library.MmapedDict = AllocatedMmapedDict
