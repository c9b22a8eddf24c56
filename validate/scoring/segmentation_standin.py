"""A stand-in for :mod:`validate.metrics.segmentation` (slice segmetrics, issue #20) with its spec'd
signature, used by :mod:`validate.scoring.segmentation` only while that module is absent. DELETE this
file once ``validate.metrics.segmentation`` is merged: the import in the scorer prefers it.

Definitions follow the shared spec: surface = the mask's boundary pixels (the mask minus its binary
erosion, 4-connectivity), distances Euclidean in mm between boundary pixel centres (scipy's
``distance_transform_edt`` with ``sampling=spacing``); hd = max of the two directed maxima, hd95 = max
of the two directed 95th percentiles (linear interpolation, as MONAI's ``torch.quantile``), assd =
mean of all boundary distances both ways, nsd@τ = (|∂P within τ of ∂R| + |∂R within τ of ∂P|) /
(|∂P| + |∂R|). Empty masks follow Metrics Reloaded (both: perfect or excluded; one: overlaps 0,
distances the image diagonal in mm)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from validate.protocol import nsd_metric_key


@dataclass(frozen=True)
class EmptyPolicy:
    both: Literal["perfect", "exclude"] = "perfect"
    one: Literal["worst"] = "worst"


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _directed(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distances (mm) from each surface element of ``a`` to the nearest surface element of ``b``."""
    return ndimage.distance_transform_edt(~b, sampling=spacing)[a]


def mask_ellipse_circumference(mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Perimeter (mm) of the ellipse with the mask's second moments (a filled ellipse of semi-axes a,
    b has variances a²/4, b²/4 along its axes); Ramanujan's second approximation."""
    pts = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(pts) < 2:
        return float("nan")
    lam = np.clip(np.linalg.eigvalsh(np.cov(pts, rowvar=False, bias=True)), 0, None)
    b, a = 2 * math.sqrt(lam[0]), 2 * math.sqrt(lam[-1])
    if a + b == 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    *,
    nsd_tolerances_mm: Sequence[float] = (),
    policy: EmptyPolicy = EmptyPolicy(),
    biometry: str | None = None,
) -> dict[str, float]:
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    unit = float(np.prod(spacing))
    size = "area" if pred.ndim == 2 else "volume"
    suffix = "mm2" if pred.ndim == 2 else "mm3"
    a_ref, a_pred = float(ref.sum()) * unit, float(pred.sum()) * unit
    out: dict[str, float] = {}
    ref_empty, pred_empty = not ref.any(), not pred.any()
    if ref_empty and pred_empty:
        v = 1.0 if policy.both == "perfect" else float("nan")
        d = 0.0 if policy.both == "perfect" else float("nan")
        out.update(dice=v, iou=v, hd_mm=d, hd95_mm=d, assd_mm=d, **{nsd_metric_key(t): v for t in nsd_tolerances_mm})
    elif ref_empty or pred_empty:
        diag = float(math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing, strict=True))))
        out.update(dice=0.0, iou=0.0, hd_mm=diag, hd95_mm=diag, assd_mm=diag)
        out.update({nsd_metric_key(t): 0.0 for t in nsd_tolerances_mm})
    else:
        inter = float((pred & ref).sum())
        out["dice"] = 2 * inter / (pred.sum() + ref.sum())
        out["iou"] = inter / float((pred | ref).sum())
        sp, sr = _surface(pred), _surface(ref)
        dp, dr = _directed(sp, sr, spacing), _directed(sr, sp, spacing)
        out["hd_mm"] = float(max(dp.max(), dr.max()))
        out["hd95_mm"] = float(max(np.percentile(dp, 95), np.percentile(dr, 95)))
        out["assd_mm"] = float((dp.sum() + dr.sum()) / (len(dp) + len(dr)))
        for t in nsd_tolerances_mm:
            out[nsd_metric_key(t)] = float(((dp <= t).sum() + (dr <= t).sum()) / (len(dp) + len(dr)))
    out[f"{size}_ref_{suffix}"] = a_ref
    out[f"{size}_pred_{suffix}"] = a_pred
    out[f"{size}_error_{suffix}"] = a_pred - a_ref
    out["ref_empty"], out["pred_empty"] = float(ref_empty), float(pred_empty)
    if biometry == "ellipse_circumference":
        hr, hp = mask_ellipse_circumference(ref, spacing), mask_ellipse_circumference(pred, spacing)
        out.update(hc_ref_mm=hr, hc_pred_mm=hp, hc_error_mm=hp - hr, hc_abs_error_mm=abs(hp - hr))
    return out
