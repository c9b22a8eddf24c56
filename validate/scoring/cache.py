"""Shard cache: a re-run scores only what is missing, and a killed run resumes where it stopped.

A site's cases are cut into shards of ``shard_size`` consecutive manifest rows. A finished shard is
written as one ``.npz`` file (temporary name, fsync, rename: a killed run never leaves a shard that
looks whole but is not) at::

    <cache>/<site>/<run key>/shard-<index>-<rows key>.npz

The run key hashes what changes every score (checkpoint sha256, preprocessing, the output mapping,
autocast, shard size); the rows key hashes the shard's own manifest content (case ids and their
inputs: image path, size and modification time, or feature values). So a changed image or row
rescores only its shard, and a different checkpoint or preprocessing never reuses old scores. The
device is not part of the key: CPU and GPU scores of the same model agree to float32 rounding.

Size and modification time miss an image replaced by another of the same size whose modification
time was set back (a copy tool that keeps times, a restore from backup). With ``hash_inputs`` the
rows key hashes each image file's content (SHA-256) instead: every file is read once per run, which
costs about as much as decoding a PNG. It is on by default when the environment variable ``CI`` is
``true`` or ``1`` (:func:`ci_mode`), where a verdict must never rest on a stale score.

Each shard's SHA-256 is stored beside it (``shard-….npz.sha256``, written just before the shard is
renamed into place) and checked
on every read: a shard that was changed, cut short or has lost its checksum is scored again, with a
warning on stderr, never trusted.

A case that is a folder (a DICOM series of ``kind: volume``) is keyed by every file in it (name, size
and modification time, or content), not by the folder's own times, which an edited slice leaves as
they were.

Image shards also hold each case's image statistics and DICOM equipment, volume shards each case's
acquisition row (see :class:`~validate.scoring.evaluator.ShardResult`), stored under the names of
their columns, so a
cached run gives the same predictions table as a fresh one. :data:`CACHE_VERSION` is part of the run
key: raise it whenever what a shard holds, or how it is computed, changes, so that older shards are
never read as if they were complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from validate.io import atomic_path
from validate.scoring.checksums import CHECKSUM_SUFFIX, checksum_ok, file_sha256, write_checksum
from validate.scoring.evaluator import ShardResult
from validate.scoring.inputs import IMAGE_STAT_COLUMNS
from validate.scoring.volume_inputs import ACQUISITION_COLUMNS

# 2: shards of image sites carry per-case image statistics and DICOM equipment
# 3: each shard has a checksum file; failure reasons hold no paths
# 4: volume shards carry each case's acquisition row; a folder (DICOM series) is keyed by its files
CACHE_VERSION = 4


def ci_mode() -> bool:
    """Whether the environment says this is a CI run (``CI`` set to ``true`` or ``1``, as GitHub
    Actions, GitLab CI and most others set it): image files are then keyed by content."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def run_key(*, checkpoint_sha256: str, preprocessing: dict, output: dict, amp: str, shard_size: int) -> str:
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "checkpoint": checkpoint_sha256,
            "preprocessing": preprocessing,
            "output": output,
            "amp": amp,
            "shard_size": shard_size,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def image_rows_key(case_ids: Sequence[str], paths: Sequence[str], *, content: bool = False) -> str:
    """Content key of image cases: ids, paths, and each file's size and modification time, or with
    ``content`` the SHA-256 of each file's bytes."""
    h = hashlib.sha256()
    for cid, p in zip(case_ids, paths, strict=True):
        try:
            if os.path.isdir(p):  # a DICOM series: its own times change only when a file is added or removed
                ident = _folder_ident(p, content)
            elif content:
                ident = "sha256:" + file_sha256(p)
            else:
                st = os.stat(p)
                ident = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            ident = "missing"
        h.update(f"{cid}\t{p}\t{ident}\n".encode())
    return h.hexdigest()


def _folder_ident(folder: str, content: bool) -> str:
    """A folder case's identity: every entry's name with its size and modification time (or its
    content's SHA-256), in name order. A slice overwritten in place leaves the folder's own time as it
    was, so the folder's stat alone would keep a stale score."""
    h = hashlib.sha256()
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file():  # follows links: the reader refuses those leading out of the folder
            ident = (
                "sha256:" + file_sha256(entry.path) if content else f"{entry.stat().st_size}:{entry.stat().st_mtime_ns}"
            )
        else:
            ident = "not a file"
        h.update(f"{entry.name}\t{ident}\n".encode())
    return "folder:" + h.hexdigest()


def tabular_rows_key(case_ids: Sequence[str], features: np.ndarray, bad: dict[int, str], offset: int) -> str:
    h = hashlib.sha256()
    h.update("\n".join(map(str, case_ids)).encode())
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    h.update(json.dumps({str(k - offset): v for k, v in sorted(bad.items())}).encode())
    return h.hexdigest()


class ShardCache:
    """The shards of one site under one run key."""

    def __init__(self, root: Path, site: str, key: str):
        self.dir = Path(root) / site / key[:24]

    def path(self, index: int, rows_key: str) -> Path:
        return self.dir / f"shard-{index:06d}-{rows_key[:16]}.npz"

    def load(self, index: int, rows_key: str, case_ids: Sequence[str]) -> ShardResult | None:
        """The cached shard if present, readable and about the same cases; else None."""
        path = self.path(index, rows_key)
        if not path.exists() or not checksum_ok(path, "cached scores"):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored_ids = z["case_id"].tolist()
                res = ShardResult(
                    positions=z["positions"].astype(np.int64),
                    logits=z["logits"].astype(np.float64),
                    failures=[
                        (int(p), str(r), str(s))
                        for p, r, s in zip(z["fail_position"], z["fail_reason"], z["fail_stage"], strict=True)
                    ],
                )
                if "image_stats" in z.files:
                    if z["image_stat_columns"].tolist() != list(IMAGE_STAT_COLUMNS):
                        return None  # statistics of another definition: recompute rather than mislabel
                    res.image_stats = z["image_stats"].astype(np.float64)
                    res.equipment = z["equipment"].astype(object)
                if "acquisition" in z.files:
                    if z["acquisition_columns"].tolist() != list(ACQUISITION_COLUMNS):
                        return None  # other acquisition columns: read the volumes again rather than mislabel
                    res.acquisition = z["acquisition"].astype(object)
        except Exception:
            return None  # unreadable: score it again (the rename makes this rare: only foreign damage)
        if stored_ids != [str(c) for c in case_ids]:
            return None
        return res

    def remove_stale(self, index: int, path: Path) -> None:
        """Remove the other versions of shard ``index`` (other rows keys): ``path`` replaces them."""
        for stale in self.dir.glob(f"shard-{index:06d}-*") if self.dir.exists() else []:
            if stale not in (path, Path(str(path) + CHECKSUM_SUFFIX)) and not stale.name.startswith("."):
                stale.unlink(missing_ok=True)

    def save(self, index: int, rows_key: str, case_ids: Sequence[str], result: ShardResult) -> Path:
        path = self.path(index, rows_key)
        self.remove_stale(index, path)
        fails = result.failures
        extras = {}
        n = len(result.positions)
        if result.image_stats is not None:
            extras = {
                "image_stats": np.asarray(result.image_stats, dtype=np.float64),
                "image_stat_columns": np.asarray(IMAGE_STAT_COLUMNS, dtype=str),
                "equipment": np.asarray(
                    result.equipment if result.equipment is not None else np.full((n, 2), ""), dtype=str
                ).reshape(n, 2),
            }
        if result.acquisition is not None:
            extras["acquisition"] = np.asarray(result.acquisition, dtype=str).reshape(n, len(ACQUISITION_COLUMNS))
            extras["acquisition_columns"] = np.asarray(ACQUISITION_COLUMNS, dtype=str)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    case_id=np.asarray([str(c) for c in case_ids], dtype=str),
                    positions=result.positions.astype(np.int64),
                    logits=result.logits.astype(np.float64),
                    fail_position=np.asarray([f[0] for f in fails], dtype=np.int64),
                    fail_reason=np.asarray([f[1] for f in fails], dtype=str),
                    fail_stage=np.asarray([f[2] for f in fails], dtype=str),
                    **extras,
                )
            write_checksum(path, tmp)
        return path
