"""What this machine offers the suite: CPUs it may use and memory that is free (one place, so that the
evaluator's loader workers and the metrics' block workers count alike), and how its allocator treats
the large arrays a metrics block frees and allocates again."""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cache


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Free physical memory in bytes, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


# glibc's mallopt parameters (malloc.h) and the values its dynamic rule settles on once a large array has
# been freed: arrays up to 32 MiB from the heap, the heap's free top trimmed beyond 64 MiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX = 32 << 20
_MMAP_MAX_DEFAULT = 65536


@cache
def _glibc():
    """The C library when it is glibc (its ``mallopt`` and ``malloc_trim``), else None."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):  # pragma: no cover - musl, macOS, Windows
        return None


@contextmanager
def freed_memory_kept():
    """While the block runs, memory freed by large arrays stays with the allocator for the next array
    instead of going back to the system.

    glibc serves allocations beyond 32 MiB (one float64 column of 4M cases, any replicate chunk) with a
    fresh ``mmap`` and unmaps them when freed, so each such temporary is faulted in page by page again —
    at 10M cases about as long as filling it once more, for every array of every replicate (measured:
    a tenth of the bootstrap's time). Inside the block ``mallopt`` takes them from the heap
    (``M_MMAP_MAX`` 0) and keeps the heap's free top (``M_TRIM_THRESHOLD``); on leaving,
    ``malloc_trim(0)`` hands the freed memory back and the parameters take the values glibc's dynamic
    rule reaches in any process that has freed a large array. The peak is what the block needs at once,
    as before. Nothing happens where the C library is not glibc."""
    libc = _glibc()
    if libc is None:  # pragma: no cover - not glibc
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.malloc_trim(0)
        libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
