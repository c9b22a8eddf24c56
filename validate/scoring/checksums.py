"""Checksums of the files the scoring caches write (shards, decoded inputs): each file's SHA-256 is
stored beside it (``<file>.sha256``) and checked on every read, so a file that was changed, cut short
or has lost its checksum is computed again, never trusted.

Both caches (:mod:`validate.scoring.cache`, :mod:`validate.scoring.input_cache`) use these; they live
apart so that neither cache module imports the other.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

CHECKSUM_SUFFIX = ".sha256"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksum(path: Path, written: Path) -> None:
    """The SHA-256 of ``written`` (the complete temporary file about to be renamed to ``path``) into
    ``path.sha256``. Called before the rename: a run killed in between leaves at most a checksum
    without its shard (harmless), never a shard without its checksum (which would be scored again)."""
    from validate.io import atomic_write_text

    atomic_write_text(Path(str(path) + CHECKSUM_SUFFIX), file_sha256(written) + "\n")


def checksum_ok(path: Path, what: str) -> bool:
    """Whether ``path`` matches its stored checksum; if not, say so on stderr (it will be redone)."""
    try:
        stored = Path(str(path) + CHECKSUM_SUFFIX).read_text().strip()
    except OSError:
        stored = ""
    try:
        actual = file_sha256(path)
    except OSError:
        return False
    if stored == actual:
        return True
    why = "has no checksum" if not stored else "does not match its checksum (changed since it was written)"
    print(f"warning: {what} {path.parent.parent.name}/{path.name} {why}; not used, computed again", file=sys.stderr)
    return False
