"""Scoring a segmentation checkpoint (``task: segmentation``, issue #20).

Per batch the model gives per-pixel logits ``[N, C, h, w]`` (C = labels for ``activation: sigmoid``,
labels + 1 with channel 0 the background for ``softmax``). For each case the logits are upsampled to
the reference mask's native size (bilinear, ``align_corners=False``), turned into one probability map
per label (sigmoid of the label's logit; softmax: the label's class probability, whose binary logit is
log p − log(1 − p) = z_k − logsumexp_{j≠k} z_j), thresholded at ``segmentation.threshold`` and compared
with the reference (mask == the label's pixel value) by ``case_metrics``. The masks are then dropped:
what is kept per case is

- one predictions row per (case, label): ids, attributes, pixel spacing, image statistics and the
  per-case metrics, plus ``area_expected_mm2`` (Σp × pixel area: the model's expected area);
- ``pixel_histogram.parquet``: per case and label, every pixel's probability in 20 equal-width bins,
  right-closed (a, b] with 0 in bin 0 (as :func:`validate.metrics.calibration.ece`): ``n``, ``sum_p``,
  ``sum_y`` of the non-empty bins — the exact pixel ECE and reliability diagram, and case-clustered
  bootstrap by summing case histograms;
- ``pixel_sample.parquet``: ``pixel_sample`` pixels per case (uniform without replacement, the same
  pixels for every label; ``numpy.random.default_rng`` seeded from (``metrics.seed``, site, case id),
  so reruns draw the same) with the label's logit (float32) and reference (int8), for temperature
  scaling;
- ``overlays.parquet``: the ``worst_cases`` lowest-Dice cases per site and label (a bounded heap:
  memory flat in the number of cases), both masks downsampled (nearest) to at most 128 px on the long
  side and bit-packed (``np.packbits`` of the row-major mask).

Side files are streamed to Parquet per shard (``pyarrow.parquet.ParquetWriter``), so memory does not
grow with the number of cases beyond the predictions rows. Case ids are written as in the manifest, as
predictions.parquet is: the bundle writer hashes both alike.

Cases are scored in shards of ``shard_size`` manifest rows, each cached as it finishes
(:mod:`validate.scoring.segmentation_cache`: its rows, side-file rows and worst-case candidates): a
rerun with the same checkpoint, settings and files loads them and scores nothing, a killed run
resumes, a changed image or mask rescores its shard; the worst-case heaps are rebuilt from the
shards' candidates, so the outputs are the same cached or not. Not yet shared with the
classification engine: torchrun distribution (a segmentation run is scored in one process).

A case whose image or mask cannot be read, whose mask is not its image's size or holds a value no
label declares, or whose output is not finite, is a failure (failures.csv); a model whose output
shape does not fit the protocol, or a case without a pixel spacing, is bad input.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import hashlib
import heapq
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from validate.errors import InputError
from validate.io import atomic_write_json
from validate.metrics.segmentation import EmptyPolicy, case_metrics
from validate.numerics import PROB_FLOOR
from validate.scoring.evaluator import AMP_DTYPES, ImageCases, Progress, make_loader, resolve_device, shard_batches
from validate.scoring.inputs import (
    IMAGE_STAT_COLUMNS,
    CaseError,
    Preprocessing,
    exception_text,
    normalise,
    read_case_with_stats,
    resize,
    scrub_paths,
)
from validate.scoring.segmentation_cache import (
    SegmentationShard,
    SegmentationShardCache,
    segmentation_rows_key,
    segmentation_run_key,
)

#: Side files written next to predictions.parquet (then copied into the bundle).
SIDE_FILES = ("pixel_histogram.parquet", "pixel_sample.parquet", "overlays.parquet")
#: Bins of the pixel histogram (equal width on [0, 1], right-closed, 0 in the first bin).
PIXEL_BINS = 20
#: Longest side (pixels) of an overlay mask.
OVERLAY_SIDE = 128
#: Rows buffered per Parquet row group of a side file.
ROW_GROUP = 16_384


# ---- reading masks -------------------------------------------------------------------------------


def read_mask(path: str, allowed: Sequence[int]) -> np.ndarray:
    """A reference mask as a 2D integer array of its stored values (a PNG's grey or palette index; a
    1-bit image as 0/255; a colour image only when its colour channels agree). A value that is neither
    0 nor a declared label value is a :class:`CaseError`: it would otherwise count as background."""
    from PIL import Image

    if not path:
        raise CaseError("no mask path for this case")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L") if im.mode == "1" else im)
    except FileNotFoundError:
        raise CaseError("mask file not found") from None
    except Exception as exc:  # noqa: BLE001 - any decoder fault is this case's failure
        raise CaseError(f"mask could not be read: {exception_text(exc)}") from None
    if arr.ndim == 3:
        colour = arr[..., :3]
        if not (colour == colour[..., :1]).all():
            raise CaseError("mask is a colour image whose channels differ", stage="read")
        arr = colour[..., 0]
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise CaseError(f"mask is not a 2D integer image (got {arr.dtype} {arr.shape})")
    ok = np.isin(arr, np.asarray([0, *allowed]))
    if not ok.all():
        extra = sorted(int(v) for v in np.unique(arr[~ok])[:5])
        raise CaseError(f"mask holds pixel value(s) {extra} that segmentation.label_values does not declare")
    return arr


def check_mask_size(mask: np.ndarray, image_shape: tuple[int, int]) -> None:
    """Refuse a mask whose size differs from its image's: the pixel spacing is the image's, so metrics
    in mm computed at another size would be silently wrong (a mask of another scan, or resized)."""
    if tuple(mask.shape) != tuple(image_shape):
        raise CaseError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} pixels but its image is {image_shape[1]}x{image_shape[0]} "
            "(width x height): the pixel spacing is the image's, so the mask must have the image's size",
            stage="read",
        )


class SegmentationCases(ImageCases):
    """Image cases with their reference masks: each batch also gives ``masks`` (one 2D array per read
    case, row for row with ``ok``). A case whose mask cannot be read, or whose size is not its image's
    native size (before the model's resizing), is a failure of the batch."""

    def __init__(self, paths: Sequence[str], mask_paths: Sequence[str], spec: Preprocessing, allowed: Sequence[int]):
        super().__init__(paths, spec)
        self.mask_paths = list(mask_paths)
        self.allowed = list(allowed)
        self._native: dict[str, tuple[int, int]] = {}  # image path -> (height, width) as decoded

    def _read(self, path: str) -> tuple[np.ndarray, np.ndarray | None, tuple[str, str], tuple[str, ...]]:
        """The case read at its native size (recorded), then resized as :func:`read_case_with_stats` does."""
        arr, values, equip, acq = _read_native(path, self.spec)
        self._native[path] = (int(arr.shape[1]), int(arr.shape[2]))
        if self.spec.size is not None and tuple(arr.shape[1:]) != tuple(self.spec.size):
            arr = resize(arr.transpose(1, 2, 0), self.spec.size).transpose(2, 0, 1)
        return arr, values, equip, acq

    def __getitem__(self, positions: Sequence[int]) -> dict:
        self._native.clear()
        batch = super().__getitem__(positions)
        keep, masks = [], []
        for j, pos in enumerate(batch["ok"].tolist()):
            try:
                mask = read_mask(self.mask_paths[pos], self.allowed)
                check_mask_size(mask, self._native[self.paths[pos]])
                masks.append(mask)
                keep.append(j)
            except CaseError as exc:
                batch["failed"].append((int(pos), exc.reason, exc.stage))
        if len(keep) < len(batch["ok"]):
            index = torch.as_tensor(keep, dtype=torch.int64)
            batch["ok"] = batch["ok"][index]
            batch["x"] = batch["x"][index] if keep else None
            batch["stats"] = batch["stats"][index] if keep and batch["stats"] is not None else None
        batch["masks"] = masks
        return batch


def _read_native(
    path: str, spec: Preprocessing
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, str], tuple[str, ...]]:
    """One 2D case as decoded (``[C, H, W]``, not resized), its image statistics and equipment."""
    arr, values, equip = read_case_with_stats(path, dataclasses.replace(spec, size=None))
    return arr, values, equip, ()


# ---- one case ------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """What every case of a run shares."""

    labels: list[str]
    values: list[int]
    softmax: bool
    probabilities: bool  # the model outputs probabilities, not logits
    threshold: float
    nsd: list[float]
    policy: Any
    biometry: str | None
    pixel_sample: int
    seed: int


def label_logits(out: torch.Tensor, size: tuple[int, int], s: _Settings) -> torch.Tensor:
    """``[L, H, W]`` float32 logits of each label at the mask's size ``size`` from one case's model
    output ``[C, h, w]``: upsampled bilinearly (align_corners=False) as logits, then per label the
    sigmoid logit or, for softmax, z_k − logsumexp_{j≠k} z_j (the label's one-vs-rest log-odds)."""
    z = out.float()
    if s.probabilities:  # logits of the given probabilities (log-probabilities for softmax)
        p = z.double().clamp(PROB_FLOOR, 1 - PROB_FLOOR)  # the suite's one floor
        z = (p.log() if s.softmax else torch.logit(p)).float()
    z = torch.nn.functional.interpolate(z[None], size=size, mode="bilinear", align_corners=False)[0]
    if not s.softmax:
        return z
    logp = torch.log_softmax(z, dim=0)
    rows = []
    for k in range(1, logp.shape[0]):
        others = torch.cat([logp[:k], logp[k + 1 :]])
        rows.append(logp[k] - torch.logsumexp(others, dim=0))
    return torch.stack(rows)


def pixel_histogram(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(bins, n, sum_p, sum_y)`` of the non-empty bins: bin = ceil(p·20) − 1, with p = 0 in bin 0
    (right-closed equal-width bins, as :func:`validate.metrics.calibration.ece`)."""
    b = np.clip(np.ceil(p * PIXEL_BINS).astype(np.intp) - 1, 0, PIXEL_BINS - 1).ravel()
    n = np.bincount(b, minlength=PIXEL_BINS)
    sum_p = np.bincount(b, weights=p.ravel(), minlength=PIXEL_BINS)
    sum_y = np.bincount(b, weights=y.ravel().astype(np.float64), minlength=PIXEL_BINS)
    keep = np.flatnonzero(n)
    return keep, n[keep], sum_p[keep], sum_y[keep]


def case_rng(seed: int, site: str, case_id: str) -> np.random.Generator:
    """The pixel-sample generator of one case: seeded from (seed, site, case id) through SHA-256, so a
    rerun (or another order of sites and cases) draws the same pixels."""
    digest = hashlib.sha256(f"{seed}\x1f{site}\x1f{case_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def downsample(mask: np.ndarray, side: int = OVERLAY_SIDE) -> np.ndarray:
    """Nearest-neighbour downsampling to at most ``side`` pixels on the long side (pixel centres)."""
    h, w = mask.shape
    f = max(h, w) / side
    if f <= 1:
        return mask
    hh, ww = max(1, round(h / f)), max(1, round(w / f))
    rows = np.minimum(((np.arange(hh) + 0.5) * h / hh).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(ww) + 0.5) * w / ww).astype(np.intp), w - 1)
    return mask[np.ix_(rows, cols)]


@dataclass
class _CaseOutput:
    metrics: list[dict]  # one per label
    histogram: dict[str, list]
    sample: dict[str, list]
    overlays: list[tuple[str, float, np.ndarray, np.ndarray]]  # (label, dice, pred, ref)


def score_case(
    out: torch.Tensor, mask: np.ndarray, spacing: tuple[float, float], site: str, case_id: str, s: _Settings
) -> _CaseOutput:
    """Every kept quantity of one case from its model output and reference mask."""
    z = label_logits(out, (int(mask.shape[0]), int(mask.shape[1])), s)
    if not bool(torch.isfinite(z).all()):
        raise CaseError("model output is NaN or Inf", stage="score")
    z64 = z.double().cpu().numpy()
    from scipy.special import expit

    n_pix = mask.size
    k = min(s.pixel_sample, n_pix)
    idx = case_rng(s.seed, site, case_id).choice(n_pix, size=k, replace=False)
    res = _CaseOutput(
        [], {k: [] for k in ("label", "bin", "n", "sum_p", "sum_y")}, {"label": [], "logit": [], "y": []}, []
    )
    area = float(spacing[0] * spacing[1])
    for j, (label, value) in enumerate(zip(s.labels, s.values, strict=True)):
        p = expit(z64[j])
        ref = mask == value
        pred = p >= s.threshold
        m = case_metrics(pred, ref, spacing, nsd_tolerances_mm=s.nsd, policy=s.policy, biometry=s.biometry)
        m["area_expected_mm2"] = float(p.sum()) * area
        res.metrics.append(m)
        bins, n, sp, sy = pixel_histogram(p, ref)
        for key, v in (("bin", bins), ("n", n), ("sum_p", sp), ("sum_y", sy)):
            res.histogram[key].append(v)
        res.histogram["label"].append([label] * len(bins))
        res.sample["label"].append([label] * k)
        res.sample["logit"].append(z64[j].ravel()[idx].astype(np.float32))
        res.sample["y"].append(ref.ravel()[idx].astype(np.int8))
        res.overlays.append((label, float(m["dice"]), pred, ref))
    return res


# ---- the worst cases ------------------------------------------------------------------------------


class WorstCases:
    """The ``k`` lowest-Dice cases per (site, label), kept in bounded max-heaps: memory does not grow
    with the number of cases. Ties keep the earlier case. A case the policy excluded (NaN Dice) is not
    a worst case.

    Each shard keeps its own ``WorstCases`` and hands its :meth:`candidates` (in case order) to the
    run's, through :meth:`offer_candidates`: the k lowest of a site, by (Dice, case order), are among
    the k lowest of their shards, so the run's heaps end the same whether a shard was scored or read
    from the cache."""

    def __init__(self, k: int):
        self.k = k
        self.heaps: dict[tuple[str, str], list] = {}
        self.count = 0

    def _slot(self, site: str, label: str, dice: float) -> tuple[float, int] | None:
        """The heap key of the next offer of (site, label) if it enters the heap, else None."""
        if self.k <= 0 or not np.isfinite(dice):
            return None
        heap = self.heaps.setdefault((site, label), [])
        self.count += 1
        key = (-dice, -self.count)  # the root is the highest Dice, the latest among equals
        if len(heap) >= self.k and key <= heap[0][0]:
            return None
        return key

    def _push(self, site: str, label: str, entry: tuple) -> None:
        heap = self.heaps[(site, label)]
        if len(heap) < self.k:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)

    def offer(self, site: str, case_id: str, label: str, dice: float, pred: np.ndarray, ref: np.ndarray) -> None:
        key = self._slot(site, label, dice)
        if key is None:
            return
        small_p, small_r = downsample(pred), downsample(ref)
        self._push(site, label, (key, case_id, np.packbits(small_p), np.packbits(small_r), small_p.shape))

    def offer_candidates(self, candidates: Any) -> None:
        """Offer another heap's :meth:`candidates` (a pyarrow Table), in their case order."""
        rows = candidates.sort_by("order").to_pylist() if candidates.num_rows else []
        for r in rows:
            key = self._slot(r["site"], r["label"], r["dice"])
            if key is not None:
                pred, ref = np.frombuffer(r["pred"], np.uint8), np.frombuffer(r["ref"], np.uint8)
                self._push(r["site"], r["label"], (key, r["case_id"], pred, ref, (r["height"], r["width"])))

    def _entries(self) -> list[tuple]:
        """(site, case_id, label, dice, height, width, pred, ref, order), lowest Dice first."""
        rows = []
        for (site, label), heap in self.heaps.items():
            for (neg, order), case_id, p, r, shape in sorted(heap, key=lambda e: (-e[0][0], -e[0][1])):
                rows.append((site, case_id, label, -neg, shape[0], shape[1], p.tobytes(), r.tobytes(), -order))
        return rows

    def frame(self) -> Any:
        import pandas as pd

        rows = [e[:8] for e in self._entries()]
        return pd.DataFrame(rows, columns=["site", "case_id", "label", "dice", "height", "width", "pred", "ref"])

    def candidates(self) -> Any:
        """The kept cases as a pyarrow Table with their offer ``order`` (for :meth:`offer_candidates`)."""
        import pyarrow as pa

        columns = list(zip(*self._entries(), strict=True)) or [()] * 9
        return pa.table(
            {
                name: pa.array(list(values), typ)
                for (name, typ), values in zip(candidate_schema().items(), columns, strict=True)
            }
        )


@functools.cache
def candidate_schema() -> dict[str, Any]:
    """The columns of :meth:`WorstCases.candidates`."""
    import pyarrow as pa

    return {
        "site": pa.string(),
        "case_id": pa.string(),
        "label": pa.string(),
        "dice": pa.float64(),
        "height": pa.int64(),
        "width": pa.int64(),
        "pred": pa.binary(),
        "ref": pa.binary(),
        "order": pa.int64(),
    }


# ---- streaming side files -------------------------------------------------------------------------


class _Stream:
    """A Parquet file written in row groups of about :data:`ROW_GROUP` rows with a fixed schema: the
    rows of a few cases are buffered (memory bounded by the row group, not the number of cases), and
    a file read back is not thousands of one-case row groups."""

    def __init__(self, path: Path, schema: Any):
        import pyarrow.parquet as pq

        self.path, self.schema = path, schema
        self.tmp = path.with_name(path.name + ".partial")
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.parts: list[Any] = []
        self.rows = 0

    def write(self, table: Any) -> None:
        """Append a table of this stream's schema (a shard's rows)."""
        if table.num_rows:
            self.parts.append(table)
            self.rows += table.num_rows
        if self.rows >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.parts:
            self.writer.write_table(pa.concat_tables(self.parts).combine_chunks())
        self.parts, self.rows = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.tmp.replace(self.path)


@functools.cache
def side_schemas() -> dict[str, Any]:
    """The Arrow schemas of the streamed side files, by stream name."""
    import pyarrow as pa

    text = pa.dictionary(pa.int32(), pa.string())
    ids = [("site", text), ("case_id", pa.string()), ("label", text)]
    return {
        "histogram": pa.schema(
            [*ids, ("bin", pa.int16()), ("n", pa.int64()), ("sum_p", pa.float64()), ("sum_y", pa.float64())]
        ),
        "sample": pa.schema([*ids, ("logit", pa.float32()), ("y", pa.int8())]),
    }


def _streams(out_dir: Path) -> dict[str, _Stream]:
    schemas = side_schemas()
    return {
        "histogram": _Stream(out_dir / "pixel_histogram.parquet", schemas["histogram"]),
        "sample": _Stream(out_dir / "pixel_sample.parquet", schemas["sample"]),
    }


def _side_tables(site: str, case_id: str, res: _CaseOutput) -> dict[str, Any]:
    """One case's rows of the side files, as Arrow tables by stream name."""
    import pyarrow as pa

    def ids(n: int) -> dict[str, Any]:
        return {
            "site": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), [site]),
            "case_id": pa.array([case_id] * n, pa.string()),
        }

    schemas = side_schemas()
    h = res.histogram
    n_h = sum(len(b) for b in h["bin"])
    labels = np.concatenate([np.asarray(v, dtype=object) for v in h["label"]]) if n_h else np.zeros(0, object)
    histogram = {
        **ids(n_h),
        "label": pa.array(labels.tolist(), pa.string()).dictionary_encode(),
        "bin": np.concatenate(h["bin"]).astype(np.int16),
        "n": np.concatenate(h["n"]).astype(np.int64),
        "sum_p": np.concatenate(h["sum_p"]),
        "sum_y": np.concatenate(h["sum_y"]),
    }
    sm = res.sample
    n_s = sum(len(v) for v in sm["logit"])
    sample = {
        **ids(n_s),
        "label": pa.array([lab for part in sm["label"] for lab in part], pa.string()).dictionary_encode(),
        "logit": np.concatenate(sm["logit"]),
        "y": np.concatenate(sm["y"]),
    }
    return {
        "histogram": pa.table(histogram, schema=schemas["histogram"]),
        "sample": pa.table(sample, schema=schemas["sample"]),
    }


# ---- the run ---------------------------------------------------------------------------------------


@dataclass
class _Site:
    """One site's outputs while it is scored: its predictions rows as one frame per shard."""

    frames: list[Any] = field(default_factory=list)
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    scored: int = 0
    cached: int = 0


@dataclass
class _ShardBuilder:
    """One shard's outputs while its cases are scored (memory bounded by the shard size)."""

    index: int
    worst: WorstCases
    rows: list[dict] = field(default_factory=list)
    side: dict[str, list] = field(default_factory=lambda: {"histogram": [], "sample": []})
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    scored: int = 0

    def finish(self) -> SegmentationShard:
        import pandas as pd
        import pyarrow as pa

        schemas = side_schemas()
        side = {
            name: pa.concat_tables(parts).combine_chunks() if parts else schemas[name].empty_table()
            for name, parts in self.side.items()
        }
        return SegmentationShard(
            rows=pa.Table.from_pandas(pd.DataFrame(self.rows), preserve_index=False),
            histogram=side["histogram"],
            sample=side["sample"],
            candidates=self.worst.candidates(),
            failures=self.failures,
            scored=self.scored,
        )


def _settings(protocol: Any) -> _Settings:
    seg = protocol.segmentation
    labels = list(protocol.labels)
    values = seg.values_of(labels)
    return _Settings(
        labels=labels,
        values=[values[lab] for lab in labels],
        softmax=seg.activation == "softmax",
        probabilities=protocol.model.output == "probabilities",
        threshold=float(seg.threshold),
        nsd=list(seg.nsd_tolerances_mm),
        policy=EmptyPolicy.of(seg.empty),
        biometry=seg.biometry,
        pixel_sample=int(seg.pixel_sample),
        seed=int(protocol.metrics.seed),
    )


def fill_dicom_spacing(protocol: Any, cohort: Any) -> None:
    """Cases without a pixel-size column take (0028,0030) PixelSpacing [row, column] from their DICOM
    image; a readable image without one is bad input (no metric in mm can be computed). An image that
    cannot be read is left to fail as a case."""
    from validate.scoring.inputs import is_dicom

    cases = cohort.cases
    missing = np.flatnonzero(~np.isfinite(cases["spacing_y_mm"].to_numpy(dtype=np.float64)))
    for r in missing:
        path = Path(str(cases["image_path"].iloc[r]))
        if not path.is_file():
            continue
        spacing = None
        if protocol.input.kind == "dicom" or is_dicom(path):
            import pydicom

            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PixelSpacing"])
                spacing = [float(v) for v in ds.get("PixelSpacing", [])] or None
            except Exception:  # noqa: BLE001 - an unreadable header fails the case when it is read
                continue
        if spacing is None or len(spacing) != 2 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise InputError(
                "no pixel spacing for this case: the protocol names no pixel-size column and the image "
                "carries no DICOM PixelSpacing",
                file=cohort.manifest_path,
                row=int(r) + 1,
                field="segmentation.spacing_column",
                expected="segmentation.spacing_column / spacing_columns naming the mm-per-pixel column, "
                "or DICOM images with PixelSpacing",
            )
        cases.loc[cases.index[r], ["spacing_y_mm", "spacing_x_mm"]] = spacing


def _forward(ckpt: Any, x: torch.Tensor, spec: Preprocessing, dev: torch.device, amp: str) -> torch.Tensor:
    dtype = AMP_DTYPES[amp]
    autocast = torch.autocast(device_type=dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        x = normalise(x.to(ckpt.input_device, non_blocking=dev.type == "cuda"), spec)
        return ckpt(x)


def _check_output(out: Any, n: int, channels: int, activation: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != n or out.shape[1] != channels:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"the model returned {shape} for a batch of {n} images",
            field="model.checkpoint",
            expected=f"[N, {channels}, H, W] per-pixel outputs (segmentation.activation {activation}: "
            f"{'one map per label' if activation == 'sigmoid' else 'background + one map per label'})",
        )
    return out


def _case_row(cases: Any, pos: int, attributes: list[str], stats: np.ndarray | None) -> dict:
    """The predictions columns of a case shared by its labels: ids, attributes, spacing, image stats."""
    row = {c: cases[c].iloc[pos] for c in ("case_id", "site", "patient_id")}
    for attr in attributes:
        if attr in cases.columns and attr not in row:
            row[attr] = cases[attr].iloc[pos]
    if "acquired_at" in cases.columns:
        row["acquired_at"] = cases["acquired_at"].iloc[pos]
    row["spacing_y_mm"] = float(cases["spacing_y_mm"].iloc[pos])
    row["spacing_x_mm"] = float(cases["spacing_x_mm"].iloc[pos])
    if stats is not None:
        row.update(zip(IMAGE_STAT_COLUMNS, (float(v) for v in stats), strict=True))
    return row


def _score_site(run: _Run, cohort: Any) -> _Site:
    """One site's shards in order: each read from the cache where it holds them, else scored (and
    cached); their rows kept, their side-file rows streamed, their worst cases offered."""
    cases, site = cohort.cases, cohort.site.id
    n = len(cases)
    ids = cases["case_id"].astype(str).tolist()
    cache = SegmentationShardCache(run.cache_dir, site, run.key)
    bounds = [(lo, min(n, lo + run.shard_size)) for lo in range(0, n, run.shard_size)]
    keys = [_rows_key(run, cases, ids, lo, hi) for lo, hi in bounds]
    todo = [s for s, (lo, hi) in enumerate(bounds) if cache.load_shard(s, keys[s], ids[lo:hi]) is None]
    fresh = _score_shards(run, cases, site, todo, n)
    out = _Site()
    try:
        for s, (lo, hi) in enumerate(bounds):
            if s in todo:
                shard = next(fresh)
                cache.save_shard(s, keys[s], ids[lo:hi], shard)
            else:
                shard = cache.load_shard(s, keys[s], ids[lo:hi])
                if shard is None:  # it was read a moment ago: only another process can have changed it
                    raise RuntimeError(f"cached segmentation shard {cache.path(s, keys[s])} changed while in use")
                out.cached += hi - lo
            _take(run, out, shard)
    finally:
        fresh.close()
    return out


def _rows_key(run: _Run, cases: Any, ids: list[str], lo: int, hi: int) -> str:
    """The cache key of the site's rows [lo, hi): their image and mask files and the manifest columns
    their predictions rows copy."""
    columns = ["case_id", "site", "patient_id", *run.attributes, "acquired_at", "spacing_y_mm", "spacing_x_mm"]
    manifest = cases.iloc[lo:hi][[c for c in dict.fromkeys(columns) if c in cases.columns]]
    return segmentation_rows_key(
        ids[lo:hi],
        cases["image_path"].astype(str).tolist()[lo:hi],
        cases["mask_path"].astype(str).tolist()[lo:hi],
        manifest,
        content=run.hash_inputs,
    )


def _take(run: _Run, out: _Site, shard: SegmentationShard) -> None:
    """A finished shard (scored or cached) into the site's outputs and the run's side files and heaps."""
    out.frames.append(shard.rows.to_pandas())
    out.failures += shard.failures
    out.scored += shard.scored
    run.streams["histogram"].write(shard.histogram)
    run.streams["sample"].write(shard.sample)
    run.worst.offer_candidates(shard.candidates)


def _score_shards(run: _Run, cases: Any, site: str, todo: list[int], n: int) -> Any:
    """Score the shards ``todo`` of a site; yields each one's :class:`SegmentationShard` in order."""
    if not todo:
        return
    ids = cases["case_id"].astype(str).tolist()
    dataset = SegmentationCases(
        cases["image_path"].astype(str).tolist(), cases["mask_path"].astype(str).tolist(), run.spec, run.s.values
    )
    batches = shard_batches(todo, n, run.shard_size, run.batch_size)
    loader = make_loader(dataset, batches, workers=run.workers, pin_memory=run.dev.type == "cuda")
    bar = Progress(site, sum(len(b) for b in batches), run.progress)
    shard: _ShardBuilder | None = None
    try:
        for batch in loader:
            index = int(batch["positions"][0]) // run.shard_size
            if shard is not None and shard.index != index:
                yield shard.finish()
            if shard is None or shard.index != index:
                shard = _ShardBuilder(index, WorstCases(run.worst.k))
            failed = list(batch["failed"])
            ok = batch["ok"].tolist()
            if ok:
                pred = _check_output(
                    _forward(run.ckpt, batch["x"], run.spec, run.dev, run.amp), len(ok), run.channels, run.activation
                )
                for j, pos in enumerate(ok):
                    stats = batch["stats"][j].numpy() if batch["stats"] is not None else None
                    try:
                        _keep_case(run, shard, cases, pos, pred[j], batch["masks"][j], stats)
                    except CaseError as exc:
                        failed.append((pos, exc.reason, exc.stage))
            shard.failures += [
                (site, ids[p], _scrub(run, reason, cases, p), stage) for p, reason, stage in sorted(failed)
            ]
            bar.update(len(batch["positions"]))
            release_freed_memory()
        if shard is not None:
            yield shard.finish()
    finally:
        bar.close()


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system after each batch. Every case allocates
    mask-sized maps (probabilities, distance transforms: ~1 MB at 270×400) between the small
    long-lived rows it keeps; glibc then raises its mmap threshold and serves those maps from a heap
    that fragments, so without this the peak RSS grew by ~1 MB per case although nothing is kept
    (benchmarks/bench_segmentation.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _keep_case(
    run: _Run, out: _ShardBuilder, cases: Any, pos: int, output: torch.Tensor, mask: np.ndarray, stats: Any
) -> None:
    site, case_id = str(cases["site"].iloc[pos]), str(cases["case_id"].iloc[pos])
    spacing = (float(cases["spacing_y_mm"].iloc[pos]), float(cases["spacing_x_mm"].iloc[pos]))
    res = score_case(output, mask, spacing, site, case_id, run.s)
    base = _case_row(cases, pos, run.attributes, stats)
    for label, m in zip(run.s.labels, res.metrics, strict=True):
        out.rows.append({**base, "label": label, **m})
    for name, table in _side_tables(site, case_id, res).items():
        out.side[name].append(table)
    for label, dice, pred, ref in res.overlays:
        out.worst.offer(site, case_id, label, dice, pred, ref)
    out.scored += 1


def _scrub(run: _Run, reason: str, cases: Any, pos: int) -> str:
    """A failure reason without the case's paths or the sites' image roots."""
    hide = [str(cases["image_path"].iloc[pos]), str(cases["mask_path"].iloc[pos])]
    for s in run.protocol.sites:
        root = run.protocol.resolve(s.image_root) if s.image_root else None
        if root is not None:
            hide += [str(root), str(Path(root).resolve())]
    return scrub_paths(reason, *hide)


@dataclass
class _Run:
    protocol: Any
    ckpt: Any
    dev: torch.device
    spec: Preprocessing
    s: _Settings
    streams: dict[str, _Stream]
    worst: WorstCases
    batch_size: int
    workers: int
    amp: str
    progress: bool
    attributes: list[str]
    cache_dir: Path
    shard_size: int
    hash_inputs: bool
    key: str = ""

    @property
    def channels(self) -> int:
        return self.protocol.segmentation.channels(len(self.s.labels))

    @property
    def activation(self) -> str:
        return str(self.protocol.segmentation.activation)


def score_segmentation(
    protocol: Any,
    ckpt: Any,
    *,
    out_dir: Path,
    device: str = "auto",
    batch_size: int = 16,
    workers: int | None = None,
    amp: str = "none",
    strict: bool = False,
    progress: bool | None = None,
    result_type: Any = None,
    cache_dir: Path | None = None,
    shard_size: int = 512,
    hash_inputs: bool = False,
) -> Any:
    """Score every site of a segmentation protocol with ``ckpt``; write predictions.parquet (one row
    per case and label), failures.csv, scoring.json and the side files (:data:`SIDE_FILES`) into
    ``out_dir``. Returns a ``result_type`` (:class:`validate.scoring.pipeline.ScoreResult`, which the
    caller passes: this module does not import the pipeline that dispatches to it). Shards of
    ``shard_size`` cases are cached under ``cache_dir`` (default ``out_dir/cache``; see
    :mod:`validate.scoring.segmentation_cache`); ``hash_inputs`` keys image and mask files by content."""
    import sys

    from validate.cohort import load_site_manifest

    started = time.time()
    cohorts = [load_site_manifest(protocol, site) for site in protocol.sites]
    for cohort in cohorts:
        fill_dicom_spacing(protocol, cohort)
    dev = resolve_device(device)
    ckpt.prepare(dev, channels_last=False)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = protocol.segmentation
    run = _Run(
        protocol=protocol,
        ckpt=ckpt,
        dev=dev,
        spec=Preprocessing.from_protocol(protocol.input),
        s=_settings(protocol),
        streams=_streams(out_dir),
        worst=WorstCases(int(seg.worst_cases)),
        batch_size=max(1, int(batch_size)),
        workers=int(workers or 0),
        amp=amp,
        progress=bool(sys.stderr.isatty() if progress is None else progress),
        attributes=list(dict.fromkeys([*protocol.attributes, *(g.column for g in protocol.subgroups if g.column)])),
        cache_dir=Path(cache_dir) if cache_dir else out_dir / "cache",
        shard_size=max(1, int(shard_size)),
        hash_inputs=bool(hash_inputs),
    )
    run.key = _run_key(run)
    try:
        sites = {c.site.id: _score_site(run, c) for c in cohorts}
    finally:
        for stream in run.streams.values():
            stream.close()
    return _finish(protocol, ckpt, run, sites, out_dir, strict, started, result_type)


def _run_key(run: _Run) -> str:
    """The key of the run's shards: what changes any number a shard keeps."""
    from validate.scoring.volume_inputs import preprocessing_key

    settings = {
        **dataclasses.asdict(run.s),
        "activation": run.activation,
        "worst_cases": run.worst.k,
        "pixel_bins": PIXEL_BINS,
        "overlay_side": OVERLAY_SIDE,
    }
    return segmentation_run_key(
        checkpoint_sha256=run.ckpt.sha256,
        preprocessing=preprocessing_key(run.spec),
        output={"task": "segmentation", "output": run.protocol.model.output, "channels": run.channels},
        settings=settings,
        amp=run.amp,
        shard_size=run.shard_size,
    )


def _no_rows(s: _Settings) -> Any:
    """The predictions of a run that scored no case: no row, every column (a run whose every case
    failed must reach the gates — each site with no scored case fails them — not read as a malformed
    predictions file)."""
    import pandas as pd

    from validate.metrics.segmentation import metric_keys

    columns = ["case_id", "site", "patient_id", "label", "spacing_y_mm", "spacing_x_mm"]
    columns += [*metric_keys(2, s.nsd, s.biometry), "area_expected_mm2"]
    return pd.DataFrame({c: pd.Series(dtype=object if c in columns[:4] else np.float64) for c in columns})


def _finish(
    protocol: Any,
    ckpt: Any,
    run: _Run,
    sites: dict[str, _Site],
    out_dir: Path,
    strict: bool,
    started: float,
    result_type: Any,
) -> Any:
    import pandas as pd

    from validate.io import atomic_path
    from validate.scoring.outputs import failures_frame, strict_failure, write_failures, write_predictions

    frames = [f for s in sites.values() for f in s.frames if len(f)]  # a shard of failures has no rows
    predictions = pd.concat(frames, ignore_index=True) if frames else _no_rows(run.s)
    failures = failures_frame([f for s in sites.values() for f in s.failures])
    counts = {
        "cases": sum(s.scored + len(s.failures) for s in sites.values()),
        "scored": sum(s.scored for s in sites.values()),
        "failed": sum(len(s.failures) for s in sites.values()),
        "cached": sum(s.cached for s in sites.values()),
        "sites": {
            k: {"cases": s.scored + len(s.failures), "scored": s.scored, "failed": len(s.failures)}
            for k, s in sites.items()
        },
    }
    files = {"failures": out_dir / "failures.csv", "summary": out_dir / "scoring.json"}
    write_failures(failures, files["failures"])
    with atomic_path(out_dir / "overlays.parquet") as tmp:
        run.worst.frame().to_parquet(tmp, index=False)
    for name in SIDE_FILES:
        files[name.removesuffix(".parquet")] = out_dir / name
    if not (strict and counts["failed"]):
        files["predictions"] = out_dir / "predictions.parquet"
        write_predictions(predictions, files["predictions"], task="segmentation", labels=list(protocol.labels))
    summary = {
        "protocol": protocol.name,
        "protocol_sha256": protocol.sha256,
        "checkpoint": str(ckpt.path),
        "task": "segmentation",
        "labels": list(protocol.labels),
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_format": ckpt.format,
        "device": str(run.dev),
        "amp": run.amp,
        "batch_size": run.batch_size,
        "side_files": list(SIDE_FILES),
        "counts": counts,
        "started": started,
        "finished": time.time(),
    }
    atomic_write_json(files["summary"], summary)
    result = result_type(
        predictions=predictions,
        failures=failures,
        checkpoint_sha256=ckpt.sha256,
        checkpoint_format=ckpt.format,
        checkpoint_path=ckpt.path,
        device=str(run.dev),
        counts=counts,
        out_dir=out_dir,
        files=files,
    )
    if strict and counts["failed"]:
        first = next(f for s in sites.values() for f in s.failures)
        raise strict_failure(sum(len(s.failures) for s in sites.values()), first, files["failures"])
    return result
