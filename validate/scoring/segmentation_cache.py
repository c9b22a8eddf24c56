"""The shard cache of segmentation scoring: a rerun loads what a shard kept and scores nothing.

A segmentation shard keeps more than logits (:mod:`validate.scoring.cache` holds those of the other
tasks): the per-case metric rows of its cases, their rows of the side files (pixel histogram, pixel
sample), the shard's own worst cases (overlay candidates, from which the run's bounded heaps are
rebuilt: the k lowest-Dice cases of a site are among the k lowest of their shards) and its failures.
Each is stored as an Arrow IPC stream inside one ``.npz`` file, at the path, with the checksum, the
atomic rename and the stale-shard removal of :class:`~validate.scoring.cache.ShardCache`.

The run key (:func:`segmentation_run_key`) hashes the checkpoint, the preprocessing (with the
installed DICOM decoders), how the output is read, every segmentation setting that changes a kept
number (threshold, activation, label values, NSD tolerances, empty policy, biometry, pixel sample,
worst cases, seed), the mask reader's version, autocast and the shard size. The rows key
(:func:`segmentation_rows_key`) hashes the shard's image files AND mask files as image shards are
keyed (size and modification time, or with ``hash_inputs`` their content) and the manifest columns
its rows copy (ids, attributes, acquisition time, pixel spacing): a changed mask, spacing or
attribute rescores its shard only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from validate.io import atomic_path
from validate.scoring.cache import ShardCache, image_rows_key, run_key
from validate.scoring.checksums import checksum_ok, write_checksum

# 1: rows, histogram, sample, overlay candidates and failures of a shard as Arrow IPC streams
SEGMENTATION_CACHE_VERSION = 1
TABLES = ("rows", "histogram", "sample", "candidates")


@dataclass
class SegmentationShard:
    """What one shard of a site keeps: ``rows`` (predictions rows, one per case and label),
    ``histogram`` and ``sample`` (its side-file rows), ``candidates`` (its own worst cases, in case
    order), ``failures`` ((site, case id, reason, stage) per failed case) and ``scored`` (cases with
    rows)."""

    rows: Any  # pyarrow.Table
    histogram: Any
    sample: Any
    candidates: Any
    failures: list[tuple[str, str, str, str]]
    scored: int


def segmentation_run_key(
    *, checkpoint_sha256: str, preprocessing: dict, output: dict, settings: dict, amp: str, shard_size: int
) -> str:
    """The key of a segmentation run's shards (see the module docstring)."""
    import PIL

    return run_key(
        checkpoint_sha256=checkpoint_sha256,
        preprocessing=preprocessing,
        output={
            **output,
            "segmentation": settings,
            "segmentation_cache": SEGMENTATION_CACHE_VERSION,
            "mask_reader": f"pillow {PIL.__version__}",
        },
        amp=amp,
        shard_size=shard_size,
    )


def segmentation_rows_key(
    case_ids: Sequence[str], image_paths: Sequence[str], mask_paths: Sequence[str], manifest: Any, *, content: bool
) -> str:
    """The content key of a shard's cases: their image files, their mask files (each as
    :func:`~validate.scoring.cache.image_rows_key` keys image files) and the manifest columns the
    rows copy (``manifest``: a DataFrame of the shard's rows, hashed value by value with its column
    names and dtypes)."""
    import pandas as pd

    h = hashlib.sha256()
    h.update(image_rows_key(case_ids, image_paths, content=content).encode())
    h.update(image_rows_key(case_ids, mask_paths, content=content).encode())
    h.update("\x1f".join(f"{c}:{t}" for c, t in manifest.dtypes.items()).encode())
    h.update(pd.util.hash_pandas_object(manifest, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _ipc(table: Any) -> np.ndarray:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return np.frombuffer(sink.getvalue(), dtype=np.uint8)


def _table(data: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data.tobytes())).read_all()


class SegmentationShardCache(ShardCache):
    """The segmentation shards of one site under one run key (paths and checksums as
    :class:`~validate.scoring.cache.ShardCache`)."""

    def load_shard(self, index: int, rows_key: str, case_ids: Sequence[str]) -> SegmentationShard | None:
        """The cached shard if present, intact and about the same cases; else None."""
        path = self.path(index, rows_key)
        if not path.exists() or not checksum_ok(path, "cached segmentation scores"):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                if z["case_id"].tolist() != [str(c) for c in case_ids]:
                    return None
                tables = {name: _table(z[name]) for name in TABLES}
                failures = [
                    (str(a), str(b), str(c), str(d))
                    for a, b, c, d in zip(
                        z["fail_site"], z["fail_case"], z["fail_reason"], z["fail_stage"], strict=True
                    )
                ]
                scored = int(z["scored"])
        except Exception:  # noqa: BLE001 - unreadable: score it again (the rename makes this rare)
            return None
        return SegmentationShard(**tables, failures=failures, scored=scored)

    def save_shard(self, index: int, rows_key: str, case_ids: Sequence[str], shard: SegmentationShard) -> Path:
        path = self.path(index, rows_key)
        self.remove_stale(index, path)
        fails = shard.failures
        arrays: dict[str, Any] = {
            "case_id": np.asarray([str(c) for c in case_ids], dtype=str),
            "scored": np.asarray(shard.scored, dtype=np.int64),
            "fail_site": np.asarray([f[0] for f in fails], dtype=str),
            "fail_case": np.asarray([f[1] for f in fails], dtype=str),
            "fail_reason": np.asarray([f[2] for f in fails], dtype=str),
            "fail_stage": np.asarray([f[3] for f in fails], dtype=str),
            **{name: _ipc(getattr(shard, name)) for name in TABLES},
        }
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            write_checksum(path, tmp)
        return path
