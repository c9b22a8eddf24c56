"""Decoded inputs kept between runs: score many checkpoints on one cohort, decode it once.

A release gate scores every candidate checkpoint on the same fixed test cohorts, and a calibration
study re-scores them with each model variant. Decoding (PNG/JPEG/DICOM parsing, windowing, resizing)
does not depend on the checkpoint, and for small models it costs more than the forward pass. With
``cache_inputs`` the evaluator stores each shard's preprocessed inputs — the raw values the model's
normalisation starts from, as they went into the batch — with the cases that could not be read,
their image statistics and DICOM equipment, at::

    <cache>/<site>/inputs-<input key>/shard-<index>-<rows key>-x.npy   (the inputs, memory-mapped)
    <cache>/<site>/inputs-<input key>/shard-<index>-<rows key>.npz     (ids, statistics, failures)

The input key hashes the preprocessing and the shard size (not the checkpoint); the rows key is the
scores cache's (case ids, paths, file sizes and modification times, or with ``hash_inputs`` the
files' content), so an edited or replaced image invalidates its shard. Files are written atomically
(temporary name, then rename), like score shards, the inputs first: the index file marks a shard
complete. The index holds the SHA-256 of the inputs file, and the index's own SHA-256 is stored
beside it (``….npz.sha256``); both are checked when a shard is read, and a shard that fails either is
decoded again (with a warning on stderr).

These files hold pixel data of the cohort: they stay under the cache directory the user chose (by
default the run's ``out/cache``) and are never part of a bundle. Off by default.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from validate.io import atomic_path
from validate.scoring.checksums import CHECKSUM_SUFFIX, checksum_ok, file_sha256, write_checksum
from validate.scoring.inputs import IMAGE_STAT_COLUMNS
from validate.scoring.volume_inputs import ACQUISITION_COLUMNS

# 2: checksums of the index and the inputs
# 3: volume shards carry each case's acquisition row
INPUT_CACHE_VERSION = 3


def input_key(*, preprocessing: dict, shard_size: int) -> str:
    blob = json.dumps(
        {"version": INPUT_CACHE_VERSION, "preprocessing": preprocessing, "shard_size": shard_size}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class DecodedShard:
    """One shard's decoded cases: ``positions`` (site rows that were read, ascending), ``x`` their
    inputs ``[n, C, H, W]`` (uint8 or float32), ``image_stats`` and ``equipment`` row for row, and
    ``failures`` (position, reason, stage) of the cases that could not be read; volumes also their
    ``acquisition`` rows (str ``[n, len(ACQUISITION_COLUMNS)]``), None for other inputs."""

    positions: np.ndarray
    x: np.ndarray
    image_stats: np.ndarray
    equipment: np.ndarray
    failures: list
    acquisition: np.ndarray | None = None

    def batch(self, positions: Sequence[int]) -> dict:
        """The batch dict of :class:`validate.scoring.evaluator.ImageCases` for these positions (a run of
        consecutive site rows, as the evaluator's batches are)."""
        import torch

        pos = np.asarray(positions, dtype=np.int64)
        lo = int(np.searchsorted(self.positions, pos[0])) if len(pos) else 0
        hi = int(np.searchsorted(self.positions, pos[-1], side="right")) if len(pos) else 0
        rows = slice(lo, hi)  # a batch is a run of consecutive positions: its read cases are a run too
        if len(pos) and pos[-1] - pos[0] + 1 != len(pos):  # not a run: pick the cases one by one
            rows = np.flatnonzero(np.isin(self.positions, pos))
            hi, lo = len(rows), 0
        ok = self.positions[rows]
        wanted = set(pos.tolist()) if self.failures else set()
        failed = [f for f in self.failures if f[0] in wanted]
        batch = {
            "positions": torch.from_numpy(pos),
            "ok": torch.from_numpy(ok.copy()),
            "x": torch.from_numpy(self.x[rows]) if hi > lo else None,
            "failed": failed,
            "stats": torch.from_numpy(self.image_stats[rows]) if hi > lo else None,
            "equipment": [tuple(e) for e in self.equipment[rows].tolist()],
        }
        if self.acquisition is not None:
            batch["acquisition"] = [tuple(a) for a in self.acquisition[rows].tolist()]
        return batch


class InputCache:
    """The decoded-input shards of one site under one input key."""

    def __init__(self, root: Path, site: str, key: str):
        self.dir = Path(root) / site / f"inputs-{key[:24]}"

    def path(self, index: int, rows_key: str) -> Path:
        """The shard's index file (case ids, positions, statistics, equipment, failures); its inputs
        are the ``.npy`` beside it (:meth:`inputs_path`), written first: the index marks it complete."""
        return self.dir / f"shard-{index:06d}-{rows_key[:16]}.npz"

    def inputs_path(self, index: int, rows_key: str) -> Path:
        return self.dir / f"shard-{index:06d}-{rows_key[:16]}-x.npy"

    def load(self, index: int, rows_key: str, case_ids: Sequence[str]) -> DecodedShard | None:
        """The shard if present, readable and about the same cases; else None (decode again). The
        inputs are memory-mapped (copy on write): a batch reads only its own rows, in whichever
        process asks for them."""
        path = self.path(index, rows_key)
        if not path.exists() or not checksum_ok(path, "cached inputs"):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                table = z["cases"]
            inputs = self.inputs_path(index, rows_key)
            if file_sha256(inputs) != meta.get("x_sha256"):
                import sys

                print(
                    f"warning: cached inputs {inputs.parent.parent.name}/{inputs.name} do not match the checksum "
                    "in their index (changed since they were written); not used, decoded again",
                    file=sys.stderr,
                )
                return None
            x = np.load(inputs, mmap_mode="c", allow_pickle=False)
        except Exception:
            return None  # unreadable or incomplete (foreign damage): decode it again
        n = len(table)
        if (
            meta.get("case_id") != [str(c) for c in case_ids]
            or meta.get("image_stat_columns") != list(IMAGE_STAT_COLUMNS)
            or meta.get("acquisition_columns", list(ACQUISITION_COLUMNS)) != list(ACQUISITION_COLUMNS)
            or list(x.shape) != meta.get("x_shape")
            or str(x.dtype) != meta.get("x_dtype")
        ):
            return None
        return DecodedShard(
            positions=table[:, 0].astype(np.int64),
            x=x,
            image_stats=table[:, 1:],
            equipment=np.asarray(meta["equipment"], dtype=object).reshape(n, 2),
            failures=[(int(p), str(r), str(s)) for p, r, s in meta["failures"]],
            acquisition=(
                np.asarray(meta["acquisition"], dtype=object).reshape(n, len(ACQUISITION_COLUMNS))
                if "acquisition" in meta
                else None
            ),
        )

    def save(self, index: int, rows_key: str, case_ids: Sequence[str], shard: DecodedShard) -> Path:
        path = self.path(index, rows_key)
        keep = {path, self.inputs_path(index, rows_key), Path(str(path) + CHECKSUM_SUFFIX)}
        if self.dir.exists():
            for stale in self.dir.glob(f"shard-{index:06d}-*"):
                if stale not in keep and not stale.name.startswith("."):
                    stale.unlink(missing_ok=True)
        n = len(shard.positions)
        x = np.ascontiguousarray(shard.x)
        with atomic_path(self.inputs_path(index, rows_key)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, x, allow_pickle=False)
        # one float table (position, statistics) and the rest as JSON: two headers to parse per shard
        table = np.column_stack(
            [
                np.asarray(shard.positions, dtype=np.float64),
                np.asarray(shard.image_stats, dtype=np.float64).reshape(n, -1),
            ]
        )
        meta = {
            "case_id": [str(c) for c in case_ids],
            "image_stat_columns": list(IMAGE_STAT_COLUMNS),
            "equipment": [[str(a), str(b)] for a, b in np.asarray(shard.equipment, dtype=object).reshape(n, 2)],
            "failures": [[int(p), str(r), str(s)] for p, r, s in shard.failures],
            "x_shape": list(x.shape),
            "x_dtype": str(x.dtype),
            "x_sha256": file_sha256(self.inputs_path(index, rows_key)),
        }
        if shard.acquisition is not None:
            meta["acquisition_columns"] = list(ACQUISITION_COLUMNS)
            meta["acquisition"] = [
                [str(v) for v in row]
                for row in np.asarray(shard.acquisition, dtype=object).reshape(n, len(ACQUISITION_COLUMNS))
            ]
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, cases=table, meta=np.asarray(json.dumps(meta)))
            write_checksum(path, tmp)
        return path


class DecodedCases:
    """A dataset serving batches from decoded shards where the cache has them, and from ``cases`` (an
    :class:`~validate.scoring.evaluator.ImageCases`) elsewhere. ``shards`` maps the index of each shard
    found in ``cache`` to its (rows key, case ids); a shard is read when its first batch is asked for
    (in the process asking: DataLoader workers read their own), one at a time. Batches never cross a
    shard boundary. A shard that turns out unreadable is decoded from ``cases`` instead."""

    keep_inputs = True  # the evaluator hands the decoded inputs of fresh shards back for saving

    def __init__(self, cases, cache: InputCache | None, shards: dict[int, tuple[str, Sequence[str]]], shard_size: int):
        self.cases = cases
        self.cache = cache
        self.shards = shards
        self.shard_size = shard_size
        self._current: tuple[int | None, DecodedShard | None] = (None, None)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, positions: Sequence[int]) -> dict:
        s = int(positions[0]) // self.shard_size if len(positions) else None
        if s in self.shards and self.cache is not None:
            if self._current[0] != s:
                self._current = (s, None)  # drop the previous shard before reading the next
                self._current = (s, self.cache.load(s, *self.shards[s]))
            hit = self._current[1]
            if hit is not None:
                batch = hit.batch(positions)
                batch["from_cache"] = True
                return batch
        return self.cases[positions]


def collect(
    parts: list[tuple[list[int], np.ndarray | None]],
    stats: np.ndarray,
    equipment: np.ndarray,
    positions: np.ndarray,
    failures: list,
    *,
    acquisition: np.ndarray | None = None,
) -> DecodedShard:
    """A :class:`DecodedShard` from a scored shard: the decoded batches ``parts`` ((ok positions, x)),
    and the shard's per-case statistics and equipment (row for row with ``positions``). Only failures
    of reading count: a NaN output belongs to the checkpoint, not to the input."""
    ok = [p for ps, _ in parts for p in ps]
    xs = [x for _, x in parts if x is not None and len(x)]
    x = np.concatenate(xs) if xs else np.zeros((0,), dtype=np.uint8)
    rows = np.searchsorted(positions, ok) if len(ok) else np.zeros(0, dtype=np.int64)
    order = np.argsort(ok, kind="stable")
    return DecodedShard(
        positions=np.asarray(ok, dtype=np.int64)[order],
        x=x[order] if len(ok) else x,
        image_stats=np.asarray(stats, dtype=np.float64)[rows][order],
        equipment=np.asarray(equipment, dtype=object)[rows][order],
        failures=sorted(f for f in failures if f[2] != "score"),
        acquisition=np.asarray(acquisition, dtype=object)[rows][order] if acquisition is not None else None,
    )
