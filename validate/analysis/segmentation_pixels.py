"""``segmentation.json`` (contract ``validate.segmentation/1``): what a segmentation model's per-case
means do not show — calibration of its pixel probabilities, temperature scaling across sites, the
agreement of predicted and true areas, the worst cases, and the paired comparison with a baseline.

Inputs are the scoring's compact summaries (DESIGN.md, Segmentation), never whole masks:

- ``pixel_histogram.parquet`` (``site, case_id, label, bin, n, sum_p, sum_y``): per case, every pixel of
  the native-resolution probability map in 20 equal-width bins of p, right-closed (a, b] with 0 in bin
  0. The pixel ECE of a site is exact: ECE = Σ_b |Σ y − Σ p|_b / N = Σ_b (n_b / N)·|frac_pos_b −
  mean_p_b| (Guo et al. 2017, over pixels), its interval the percentile interval of the patient-
  clustered bootstrap over cases (a replicate sums the histograms of the cases it draws).
- ``pixel_sample.parquet`` (``site, case_id, label, logit, y``): a uniform sample of pixels per case,
  on which one temperature T is fitted by maximum likelihood (NLL of y under sigmoid(logit / T);
  Guo et al. 2017) on the calibration sites and the sample ECE (20 bins) compared before and after
  at every site.
- the per-case rows: Bland–Altman limits of agreement of the predicted minus the reference area
  (mean difference ± 1.96 SD, SD with ddof 1; Bland & Altman 1986), the least-squares line of the
  predicted area on the reference area, and of the expected area (Σ p · pixel area) on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from validate.errors import InputError
from validate.metrics.blocks import entry
from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval
from validate.metrics.segmentation import EmptyPolicy
from validate.metrics.settings import MetricSettings
from validate.numerics import sigmoid

PIXEL_BINS = 20
LOA_Z = 1.96  # Bland & Altman's 95% limits of agreement
HISTOGRAM_COLUMNS = ("site", "case_id", "label", "bin", "n", "sum_p", "sum_y")
SAMPLE_COLUMNS = ("site", "case_id", "label", "logit", "y")


@dataclass(frozen=True)
class SegmentationSettings:
    """The protocol's ``segmentation`` section as the statistics use it (defaults of the spec)."""

    labels: tuple[str, ...] = ()
    empty: EmptyPolicy = EmptyPolicy()
    threshold: float = 0.5
    worst_cases: int = 6

    @property
    def both(self) -> str:
        return self.empty.both

    @property
    def one(self) -> str:
        return self.empty.one

    @classmethod
    def of(cls, protocol) -> SegmentationSettings:
        seg = getattr(protocol, "segmentation", None)
        return cls(
            labels=tuple(getattr(protocol, "labels", None) or ()),
            empty=EmptyPolicy.of(getattr(seg, "empty", None)),
            threshold=float(getattr(seg, "threshold", 0.5) or 0.5),
            worst_cases=int(getattr(seg, "worst_cases", 6) or 6),
        )


# ---- pixel calibration -------------------------------------------------------------------------------


def _check_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(
            f"{name} has no column(s) {missing}",
            file=name,
            field=missing[0],
            expected=f"columns {list(columns)}",
        )


def case_histograms(hist: pd.DataFrame, case_keys: Sequence[str], bins: int = PIXEL_BINS) -> np.ndarray:
    """(n_cases, bins, 3) per case the pixel count, Σp and Σy of each bin, cases in ``case_keys``
    order (``site\\x1fcase_id``); bins a case has no row for are zero."""
    key = hist["site"].astype(str) + "\x1f" + hist["case_id"].astype(str)
    index = {k: i for i, k in enumerate(case_keys)}
    rows = key.map(index)
    keep = rows.notna().to_numpy()
    b = hist["bin"].to_numpy(dtype=np.int64)
    if ((b < 0) | (b >= bins)).any():
        raise InputError(
            f"pixel_histogram.parquet holds a bin outside 0..{bins - 1}",
            file="pixel_histogram.parquet",
            field="bin",
            expected=f"bins 0..{bins - 1}",
        )
    out = np.zeros((len(case_keys), bins, 3))
    vals = hist[["n", "sum_p", "sum_y"]].to_numpy(dtype=np.float64)
    np.add.at(out, (rows[keep].to_numpy(dtype=np.int64), b[keep]), vals[keep])
    return out


def histogram_ece(sums: np.ndarray) -> np.ndarray:
    """ECE of summed histograms ``sums`` (..., bins, 3): Σ_b |Σy − Σp|_b / Σn (NaN without pixels)."""
    n = sums[..., 0].sum(axis=-1)
    gap = np.abs(sums[..., 2] - sums[..., 1]).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, gap / np.where(n > 0, n, 1), np.nan)


def pixel_calibration_one(h: np.ndarray, clusters, settings: MetricSettings) -> dict:
    """One site and label: ECE over pixels (clustered bootstrap over cases), counts, reliability."""
    total = h.sum(axis=0)
    est = float(histogram_ece(total))
    reps = []
    if settings.n_bootstrap > 0 and h.shape[0]:
        flat = h.reshape(h.shape[0], -1)
        for _, w in iter_bootstrap_weights(settings.n_bootstrap, h.shape[0], clusters=clusters, seed=settings.seed):
            reps.append(histogram_ece((w @ flat).reshape(w.shape[0], *h.shape[1:])))
    lo, hi = percentile_interval(np.concatenate(reps), settings.ci_level) if reps else (None, None)
    reliability = [
        {
            "bin": int(b),
            "n": int(total[b, 0]),
            "mean_p": float(total[b, 1] / total[b, 0]),
            "frac_pos": float(total[b, 2] / total[b, 0]),
        }
        for b in range(total.shape[0])
        if total[b, 0] > 0
    ]
    return {
        "ece": entry(est, lo, hi, "bootstrap" if reps else "none"),
        "n_pixels": int(total[:, 0].sum()),
        "n_cases": int((h[:, :, 0].sum(axis=1) > 0).sum()),
        "reliability": reliability,
    }


def pixel_calibration(hist: pd.DataFrame | None, cases: pd.DataFrame, labels, settings: MetricSettings) -> dict:
    """``pixel_calibration`` of segmentation.json from ``pixel_histogram.parquet`` (None: no file)."""
    from validate.predictions import cluster_keys

    out: dict = {"bins": PIXEL_BINS, "sites": {}}
    if hist is None:
        out["reason"] = "no pixel histograms (pixel_histogram.parquet) came with the predictions"
        return out
    _check_columns(hist, HISTOGRAM_COLUMNS, "pixel_histogram.parquet")
    for site in dict.fromkeys(cases["site"].astype(str)):
        sub = cases[cases["site"].astype(str) == site]
        keys = (sub["site"].astype(str) + "\x1f" + sub["case_id"].astype(str)).tolist()
        clusters = cluster_keys(sub, settings.cluster_by)
        per_label = {}
        for label in labels:
            rows = hist[(hist["site"].astype(str) == site) & (hist["label"].astype(str) == label)]
            per_label[label] = pixel_calibration_one(case_histograms(rows, keys), clusters, settings)
        out["sites"][site] = per_label
    return out


# ---- temperature scaling on the pixel sample -------------------------------------------------------


def fit_temperature(logit: np.ndarray, y: np.ndarray) -> float:
    """The temperature T > 0 minimising the mean NLL of y under sigmoid(logit / T) (Guo et al. 2017):
    the suite's one temperature scaling (:class:`validate.calibrators.scaling.TemperatureScaling`), so a
    separable pixel sample raises its :class:`CalibrationFitError` instead of returning a bound."""
    from validate.calibrators.scaling import TemperatureScaling

    scaling = TemperatureScaling()
    scaling.fit(np.asarray(logit, dtype=np.float64), np.asarray(y).astype(np.int64))
    assert scaling.temperature is not None
    return float(scaling.temperature)


def temperature(sample: pd.DataFrame | None, fit_on: Sequence[str], labels) -> dict | None:
    """``temperature`` of segmentation.json: T fitted on the ``fit_on`` sites' pixel samples (every
    label pooled), and per site and label the sample's 20-bin ECE before and after; None without a
    pixel sample or without sample pixels at the fit sites."""
    from validate.metrics.calibration import ece

    if sample is None:
        return None
    _check_columns(sample, SAMPLE_COLUMNS, "pixel_sample.parquet")
    site = sample["site"].astype(str)
    fit = sample[site.isin(list(fit_on))]
    if not len(fit) or not list(fit_on):
        return None
    from validate.calibrators.base import CalibrationFitError

    try:
        t = fit_temperature(fit["logit"].to_numpy(), fit["y"].to_numpy())
    except CalibrationFitError:
        return None  # a separable sample has no finite temperature: shown as not computed, never a bound
    out: dict = {"fit_on": list(fit_on), "temperature": t, "bins": PIXEL_BINS, "sites": {}}
    for s in dict.fromkeys(site):
        per = {}
        for label in labels:
            rows = sample[(site == s) & (sample["label"].astype(str) == label)]
            if not len(rows):
                continue
            z = rows["logit"].to_numpy(dtype=np.float64)
            y = rows["y"].to_numpy(dtype=np.float64)
            per[label] = {
                "ece_before": float(ece(y, sigmoid(z), bins=PIXEL_BINS)),
                "ece_after": float(ece(y, sigmoid(z / t), bins=PIXEL_BINS)),
                "n_pixels": int(len(rows)),
            }
        out["sites"][s] = per
    return out


# ---- area agreement --------------------------------------------------------------------------------


def _line(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares slope and intercept of y on x; null when x does not vary or fewer than 2 cases."""
    if x.size < 2 or np.ptp(x) == 0:
        return {"slope": None, "intercept": None}
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return {"slope": slope, "intercept": float(ym - slope * xm)}


def agreement_one(ref: np.ndarray, pred: np.ndarray, expected: np.ndarray | None) -> dict:
    """Bland–Altman and the lines of predicted (and expected) area on the reference area."""
    d = pred - ref
    mean = float(d.mean()) if d.size else None
    sd = float(d.std(ddof=1)) if d.size > 1 else None
    out = {
        "n": int(d.size),
        "mean_difference": mean,
        "sd_difference": sd,
        "loa_low": None if sd is None or mean is None else mean - LOA_Z * sd,
        "loa_high": None if sd is None or mean is None else mean + LOA_Z * sd,
        **_line(ref, pred),
        "expected_vs_true": _line(ref, expected) if expected is not None else None,
    }
    return out


def area_agreement(frame: pd.DataFrame, labels) -> dict:
    """``area_agreement`` of segmentation.json, per site and label (3D masks: volumes; ``unit`` says)."""
    kind = "area" if "area_ref_mm2" in frame.columns else "volume"
    unit = "mm2" if kind == "area" else "mm3"
    ref_col, pred_col, exp_col = (f"{kind}_{w}_{unit}" for w in ("ref", "pred", "expected"))
    out: dict = {"quantity": kind, "unit": unit, "sites": {}}
    if ref_col not in frame.columns or pred_col not in frame.columns:
        out["reason"] = f"the predictions hold no {ref_col} and {pred_col} columns"
        return out
    site = frame["site"].astype(str)
    for s in dict.fromkeys(site):
        per = {}
        for label in labels:
            rows = frame[(site == s) & (frame["label"].astype(str) == label)]
            ref = rows[ref_col].to_numpy(dtype=np.float64)
            pred = rows[pred_col].to_numpy(dtype=np.float64)
            exp = rows[exp_col].to_numpy(dtype=np.float64) if exp_col in rows else None
            ok = np.isfinite(ref) & np.isfinite(pred) & (np.isfinite(exp) if exp is not None else True)
            per[label] = agreement_one(ref[ok], pred[ok], exp[ok] if exp is not None else None)
        out["sites"][s] = per
    return out


# ---- worst cases -----------------------------------------------------------------------------------


def worst_cases(frame: pd.DataFrame, k: int) -> dict:
    """Per site, for each label the ``k`` cases of lowest Dice (ties by case id; excluded cases, whose
    Dice is NaN, left out): ``{site: [{case_id, label, dice, hd95_mm}]}`` with the frame's own ids,
    as the scoring keeps their overlays (per site and label)."""
    out: dict = {}
    site = frame["site"].astype(str)
    finite = np.isfinite(frame["dice"].to_numpy(dtype=np.float64))
    for s in dict.fromkeys(site):
        rows = frame[(site == s) & finite]
        rows = rows.assign(_id=rows["case_id"].astype(str), _label=rows["label"].astype(str))
        rows = rows.sort_values(["_label", "dice", "_id"], kind="stable").groupby("_label", sort=True).head(k)
        out[s] = [
            {
                "case_id": str(r.case_id),
                "label": str(r.label),
                "dice": float(r.dice),
                "hd95_mm": _finite(getattr(r, "hd95_mm", None)),
            }
            for r in rows.itertuples(index=False)
        ]
    return out


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
