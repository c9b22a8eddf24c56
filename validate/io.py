"""Atomic file writes and hashing.

A killed run must never leave a file that looks whole but is not: every write goes to a temporary
file in the same folder, is flushed to disk, then renamed over the target (rename is atomic on POSIX).

File modes: the temporary file is created readable by its owner only (``0o600``), and a written file
keeps that mode unless the caller passes ``mode`` — :func:`shared_mode` (``0o666`` less the umask,
what ``open()`` would give) for a file meant to be shared, such as a report. Owner-only is the default
because the files written without a decision (caches, tables of cases) may be linked to patients.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The mode of a file holding rows of cases: its owner may read and write it, nobody else.
PRIVATE_MODE = 0o600


def current_umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux's
    ``/proc/self/status``), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shared_mode(umask: int | None = None) -> int:
    """The mode of a file meant to be shared: ``0o666`` less the umask (``0o644`` under the usual
    ``022``), as ``open()`` would create it."""
    return 0o666 & ~(current_umask() if umask is None else umask)


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds, with
    ``mode`` when given (else owner-only, :data:`PRIVATE_MODE`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp_path, mode)  # before the rename: the file never shows under its name with another mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def _check_finite(obj: Any, where: str = "$") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite number {obj!r} at {where}: map it to None before writing JSON")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def to_json_text(obj: Any) -> str:
    """Deterministic JSON (sorted keys, indent 2, no NaN) so that equal results are equal bytes."""
    _check_finite(obj)
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False, default=_default) + "\n"


def _default(obj: Any) -> Any:
    # numpy scalars and arrays without importing numpy at module import time
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def atomic_write_json(path: str | Path, obj: Any, mode: int | None = None) -> None:
    atomic_write_text(path, to_json_text(obj), mode)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
