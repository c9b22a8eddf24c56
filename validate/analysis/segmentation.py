"""Segmentation statistics: metrics.json BLOCKs from per-case metric rows (DESIGN.md, Segmentation).

A segmentation predictions table holds one row per (case, label) with the per-case metrics of
:func:`validate.metrics.segmentation.case_metrics` (Dice, IoU, HD, HD95, ASSD, NSD at each tolerance,
area or volume error, head-circumference error); no mask enters the bundle. Each BLOCK summarises a
set of cases per metric by

- the **mean** ``<m>`` and the **median** ``<m>_median`` of the per-case values, each with a
  percentile interval from the patient-clustered bootstrap (replicate weights of
  :mod:`validate.metrics.bootstrap`, the same seeds and replicate scheme as the classification
  blocks: a patient's cases enter a replicate together, stratified by site in pooled blocks).
  The replicate median is the type-7 median of the replicate multiset (a case drawn c times counts
  c times), so it equals ``numpy.median`` of the cases repeated by their counts.
- ``n`` (cases), ``n_patients`` and, where the protocol's empty policy is ``both: exclude``,
  ``n_excluded``: cases whose reference and prediction are both empty and whose metrics are NaN
  (Metrics Reloaded, Maier-Hein et al. 2024). Every other metric value must be finite: a NaN or
  infinite value elsewhere is bad input (exit 2), never silently dropped from a mean.

A block is ``insufficient`` (its numbers kept) when fewer than ``metrics.min_cases`` cases are
included; a metric none of whose cases is included has an entry with a null estimate and its reason
under ``undefined``, so a gate naming it takes the gate's insufficient policy and never passes on
nothing. With several labels the BLOCK holds ``labels: {label: BLOCK}`` and, at the top, the macro
mean over labels of each entry (its replicates the means of the labels' replicates: one set of case
weights serves every label).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from validate.errors import InputError
from validate.metrics.blocks import BOOTSTRAP_CHUNK, entry
from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval, replicate_chunk
from validate.metrics.settings import MetricSettings

#: Per-case metric columns summarised in a BLOCK, in this order (NSD columns follow Dice and IoU).
BASE_METRICS = ("dice", "iou", "hd_mm", "hd95_mm", "assd_mm")
#: Absolute errors derived from a signed error column when the table does not hold them.
ABS_ERRORS = {
    "area_abs_error_mm2": "area_error_mm2",
    "volume_abs_error_mm3": "volume_error_mm3",
    "hc_abs_error_mm": "hc_error_mm",
}
NSD_COLUMN = re.compile(r"^nsd_(\d+(?:p\d+)?)mm$")
ID_COLUMNS = ("site", "case_id", "label")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The per-case metric columns of a segmentation predictions frame summarised in its BLOCKs:
    Dice, IoU, every NSD tolerance (ascending), the distances, then the absolute errors present."""
    nsd = sorted((c for c in frame.columns if NSD_COLUMN.match(str(c))), key=_nsd_tolerance)
    out = ["dice", "iou", *nsd, "hd_mm", "hd95_mm", "assd_mm"]
    out = [c for c in out if c in frame.columns]
    out += [a for a, signed in ABS_ERRORS.items() if a in frame.columns or signed in frame.columns]
    return out


def _nsd_tolerance(col: str) -> float:
    m = NSD_COLUMN.match(col)
    return float(m.group(1).replace("p", ".")) if m else math.inf


@dataclass
class SegmentationCases:
    """The cases of a segmentation table: ``cases`` one row per case (site, case_id, patient_id and
    the attributes of its first label row), ``values`` (n_cases, n_labels, n_metrics) the per-case
    metric values (NaN where the empty policy excluded the case), ``frame_rows`` for each case and
    label the row of the original frame (for subgroup lookups)."""

    cases: pd.DataFrame
    labels: list[str]
    metrics: list[str]
    values: np.ndarray
    case_of_row: np.ndarray

    @property
    def n(self) -> int:
        return len(self.cases)

    def clusters(self, settings: MetricSettings, mask: np.ndarray) -> np.ndarray | None:
        """Bootstrap clusters of the cases in ``mask``: (site, ``cluster_by``), as the classification
        blocks use them (:func:`validate.predictions.cluster_keys`)."""
        from validate.predictions import cluster_keys

        return cluster_keys(self.cases.loc[mask], settings.cluster_by)

    def n_patients(self, mask: np.ndarray) -> int:
        sub = self.cases.loc[mask]
        col = "patient_id" if "patient_id" in sub else "case_id"
        return int((sub["site"].astype(str) + "\x1f" + sub[col].astype(str)).nunique())


def segmentation_cases(frame: pd.DataFrame, labels: Sequence[str] | None = None, *, file=None) -> SegmentationCases:
    """The per-case values of a segmentation predictions ``frame`` (one row per case and label).

    Raises :class:`InputError` for a missing id or metric column, a (case, label) pair given twice,
    a case without a row for every label, or a metric value that is NaN or infinite where the empty
    policy does not explain it (only a case with both masks empty may hold NaN: ``both: exclude``)."""
    for col in (*ID_COLUMNS, "dice"):
        if col not in frame.columns:
            raise InputError(
                f"segmentation predictions have no `{col}` column",
                file=file,
                field=col,
                expected="one row per (case, label) with the per-case metrics of validate.metrics.segmentation",
            )
    frame = _with_abs_errors(frame)
    metrics = metric_columns(frame)
    labels = list(labels) if labels else sorted(frame["label"].astype(str).unique())
    lab = frame["label"].astype(str)
    stray = sorted(set(lab) - set(labels))
    if stray:
        raise InputError(
            f"segmentation predictions hold label(s) {stray} that the protocol does not declare",
            file=file,
            field="label",
            expected=f"labels among {labels}",
        )
    key = frame["site"].astype(str) + "\x1f" + frame["case_id"].astype(str)
    dup = (key + "\x1f" + lab).duplicated()
    if dup.any():
        raise InputError(
            "a (site, case_id, label) appears twice in the segmentation predictions",
            file=file,
            row=int(np.flatnonzero(dup.to_numpy())[0]) + 1,
            field="case_id",
            expected="one row per case and label",
        )
    codes, uniq = pd.factorize(key, sort=False)
    first = pd.Series(np.arange(len(frame))).groupby(codes).min().to_numpy()
    cases = frame.iloc[first].drop(columns=["label", *metrics], errors="ignore").reset_index(drop=True)
    _check_values(frame, metrics, file)
    values = np.full((len(uniq), len(labels), len(metrics)), np.nan)
    label_idx = lab.map({name: i for i, name in enumerate(labels)}).to_numpy(dtype=np.int64)
    values[codes, label_idx] = frame[metrics].to_numpy(dtype=np.float64)
    present = np.zeros((len(uniq), len(labels)), dtype=bool)
    present[codes, label_idx] = True
    if not present.all():
        c, j = np.argwhere(~present)[0]
        raise InputError(
            f"case {cases['case_id'].iloc[c]!s} at site {cases['site'].iloc[c]!s} has no row for label {labels[j]!r}",
            file=file,
            field="label",
            expected=f"a row for every label {labels} of every case",
        )
    return SegmentationCases(cases=cases, labels=labels, metrics=metrics, values=values, case_of_row=codes)


def _with_abs_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with |signed error| columns added where only the signed error is given."""
    missing = {a: s for a, s in ABS_ERRORS.items() if a not in frame.columns and s in frame.columns}
    if not missing:
        return frame
    frame = frame.copy()
    for a, s in missing.items():
        frame[a] = pd.to_numeric(frame[s], errors="coerce").abs()
    return frame


def _check_values(frame: pd.DataFrame, metrics: list[str], file) -> None:
    """Refuse a non-finite metric value that the empty policy does not explain (see the module doc)."""
    both_empty = np.zeros(len(frame), dtype=bool)
    if "ref_empty" in frame and "pred_empty" in frame:
        both_empty = (frame["ref_empty"].to_numpy(dtype=float) == 1) & (frame["pred_empty"].to_numpy(dtype=float) == 1)
    for col in metrics:
        v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v) & ~(np.isnan(v) & both_empty)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"segmentation metric `{col}` is {frame[col].iloc[i]!r} for a case whose masks are not both empty",
                file=file,
                row=i + 1,
                field=col,
                expected="a finite number (NaN only where reference and prediction are both empty and the "
                "empty policy is both: exclude)",
            )


# ---- replicate statistics --------------------------------------------------------------------------


def weighted_mean_median(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and median of ``x`` (n,) under each row of count weights ``w`` (k, n), ignoring NaN values.

    Mean: Σ wᵢxᵢ / Σ wᵢ. Median: the type-7 median of the multiset in which case i appears wᵢ times
    (for N = Σ wᵢ elements, the mean of the sorted elements at 0-based positions ⌊(N−1)/2⌋ and
    ⌈(N−1)/2⌉). NaN for a row without weight on a finite value."""
    x = np.asarray(x, dtype=np.float64)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    keep = np.isfinite(x)
    xf, wf = x[keep], w[:, keep]
    total = wf.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (wf @ xf) / total
    order = np.argsort(xf, kind="stable")
    xs = xf[order]
    cum = np.cumsum(wf[:, order], axis=1)
    median = np.full(w.shape[0], np.nan)
    ok = total > 0
    if ok.any() and xs.size:
        lo = np.floor((total[ok] - 1) / 2)
        hi = np.ceil((total[ok] - 1) / 2)
        i_lo = (cum[ok] <= lo[:, None]).sum(axis=1)
        i_hi = (cum[ok] <= hi[:, None]).sum(axis=1)
        median[ok] = (xs[i_lo] + xs[i_hi]) / 2
    mean[~ok] = np.nan
    return mean, median


def _block_replicates(values: np.ndarray, settings: MetricSettings, clusters, strata) -> np.ndarray:
    """Replicate means and medians (n_rep, n_labels, n_metrics, 2) of ``values`` (n, L, M)."""
    n, L, M = values.shape
    out = []
    if settings.n_bootstrap > 0 and n > 0:
        for _, w in iter_bootstrap_weights(
            settings.n_bootstrap,
            n,
            clusters=clusters,
            strata=strata,
            seed=settings.seed,
            chunk=replicate_chunk(n, BOOTSTRAP_CHUNK),
        ):
            rep = np.empty((w.shape[0], L, M, 2))
            for j in range(L):
                for m in range(M):
                    rep[:, j, m, 0], rep[:, j, m, 1] = weighted_mean_median(values[:, j, m], w)
            out.append(rep)
    return np.concatenate(out, axis=0) if out else np.zeros((0, L, M, 2))


def _point(values: np.ndarray) -> np.ndarray:
    """Point means and medians (L, M, 2) of ``values`` (n, L, M) over the included (finite) cases."""
    n, L, M = values.shape
    point = np.full((L, M, 2), np.nan)
    for j in range(L):
        for m in range(M):
            x = values[:, j, m]
            x = x[np.isfinite(x)]
            if x.size:
                point[j, m] = (x.mean(), np.median(x))
    return point


def _entries(metrics: list[str], point: np.ndarray, reps: np.ndarray, level: float, why: str) -> tuple[dict, dict]:
    """The mean and median entries of one label (or the macro means): ``point`` (M, 2), ``reps``
    (n_rep, M, 2); an entry without estimate has its reason in the returned ``undefined``."""
    out, undefined = {}, {}
    for m, name in enumerate(metrics):
        for s, key in enumerate((name, f"{name}_median")):
            if not math.isfinite(point[m, s]):
                out[key] = {"estimate": None, "ci_low": None, "ci_high": None, "method": "bootstrap"}
                undefined[key] = why
                continue
            lo, hi = percentile_interval(reps[:, m, s], level) if reps.shape[0] else (None, None)
            out[key] = entry(point[m, s], lo, hi, "bootstrap" if reps.shape[0] else "none")
    return out, undefined


def segmentation_block(
    values: np.ndarray,
    metrics: list[str],
    labels: list[str],
    *,
    settings: MetricSettings,
    clusters=None,
    strata=None,
    n_patients: int | None = None,
    exclude_policy: bool = False,
) -> dict:
    """One metrics BLOCK of the cases ``values`` (n, L, M) (see the module docstring)."""
    n = values.shape[0]
    point = _point(values)
    reps = _block_replicates(values, settings, clusters, strata)
    included = np.isfinite(values).any(axis=2).sum(axis=0) if n else np.zeros(len(labels), dtype=int)
    why = "no case included: every case was excluded by the empty policy" if n else "no cases"
    per_label = []
    for j in range(len(labels)):
        ent, undef = _entries(metrics, point[j], reps[:, j], settings.ci_level, why)
        blk: dict = {"n": int(n), **ent}
        if exclude_policy:
            blk["n_excluded"] = int(n - included[j])
        _mark(blk, undef, int(included[j]), settings)
        per_label.append(blk)
    if len(labels) == 1:
        block = per_label[0]
    else:
        with np.errstate(invalid="ignore"):
            macro_point = point.mean(axis=0)  # NaN when any label is undefined: no macro over part of them
            macro_reps = reps.mean(axis=1)
        ent, undef = _entries(metrics, macro_point, macro_reps, settings.ci_level, "undefined for some label")
        block = {"n": int(n), **ent, "labels": dict(zip(labels, per_label, strict=True))}
        if exclude_policy:
            block["n_excluded"] = int(sum(b["n_excluded"] for b in per_label))
        _mark(block, undef, int(included.min()) if included.size else 0, settings)
    if n_patients is not None:
        block["n_patients"] = int(n_patients)
        for b in per_label if len(labels) > 1 else ():
            b["n_patients"] = int(n_patients)
    return block


def _mark(block: dict, undefined: dict, included: int, settings: MetricSettings) -> None:
    """Add ``undefined`` and the insufficiency rule (fewer than ``min_cases`` included cases)."""
    if undefined:
        block["undefined"] = undefined
    if included < settings.min_cases:
        block["insufficient"] = True
        block["reason"] = f"{included} included cases < min_cases {settings.min_cases}"


# ---- the metrics.json of a segmentation table -------------------------------------------------------


def segmentation_metrics(
    data: SegmentationCases,
    *,
    settings: MetricSettings,
    subgroups: pd.DataFrame | None = None,
    subgroup_columns: Sequence[str] = (),
    exclude_policy: bool = False,
) -> dict:
    """metrics.json for a segmentation task: ``overall`` (stratified by site), one block per site,
    one per value of each subgroup column (pooled over sites, stratified by site). ``subgroups`` is
    row-aligned with the predictions frame (:func:`validate.cohort.derive_subgroups`). Blocks count
    ``n_excluded`` under ``exclude_policy`` and whenever the table holds an excluded (NaN) case, so a
    table made under ``both: exclude`` never drops cases unseen."""
    sites = data.cases["site"].astype(str).to_numpy(dtype=object)
    exclude_policy = exclude_policy or bool(np.isnan(data.values).any())

    def block(mask: np.ndarray, stratified: bool) -> dict:
        return segmentation_block(
            data.values[mask],
            data.metrics,
            data.labels,
            settings=settings,
            clusters=data.clusters(settings, mask),
            strata=sites[mask] if stratified else None,
            n_patients=data.n_patients(mask),
            exclude_policy=exclude_policy,
        )

    report: dict = {
        "task": "segmentation",
        "n_bootstrap": settings.n_bootstrap,
        "ci_level": settings.ci_level,
        "seed": settings.seed,
        "overall": block(np.ones(data.n, dtype=bool), True),
        "sites": {s: block(sites == s, False) for s in dict.fromkeys(sites)},
        "subgroups": {},
    }
    for col in subgroup_columns:
        labels = case_groups(data, col, subgroups)
        report["subgroups"][col] = {v: block(labels == v, True) for v in sorted(set(labels))}
    return report


def case_groups(data: SegmentationCases, col: str, subgroups: pd.DataFrame | None) -> np.ndarray:
    """Each case's group of subgroup ``col`` as text (from its first label row; missing → ``missing``)."""
    from validate.metrics.report import MISSING_VALUE

    first = pd.Series(np.arange(data.case_of_row.size)).groupby(data.case_of_row).min().to_numpy()
    if subgroups is not None and col in subgroups:
        values = subgroups[col].reset_index(drop=True).iloc[first]
    elif col in data.cases:
        values = data.cases[col]
    else:
        raise ValueError(f"subgroup column {col!r} is neither derived nor a table attribute")
    return (
        values.map(lambda v: MISSING_VALUE if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        .to_numpy(dtype=object)
        .reshape(-1)
    )


# ---- paired comparison with a baseline model -------------------------------------------------------


def _case_keys(data: SegmentationCases) -> pd.Series:
    return data.cases["site"].astype(str) + "\x1f" + data.cases["case_id"].astype(str)


def paired_comparison(new: SegmentationCases, base: SegmentationCases, *, settings: MetricSettings) -> dict:
    """The new model's per-case metrics minus the baseline's on the same (site, case, label): per site
    and pooled (stratified by site), the mean difference of each metric with the percentile interval of
    the patient-clustered bootstrap (both models see the same replicate weights: the interval is
    paired). With several labels the difference is the macro mean over labels. A case one model
    excluded (both masks empty, ``both: exclude``) is left out of that metric's difference."""
    if list(new.labels) != list(base.labels):
        raise InputError(
            f"the baseline's labels {base.labels} differ from the new model's {new.labels}",
            field="label",
            expected="the same labels in both predictions",
        )
    index = pd.Series(np.arange(base.n), index=_case_keys(base).to_numpy())
    keys = _case_keys(new)
    matched = keys.isin(index.index).to_numpy()
    if not matched.any():
        raise InputError(
            "the baseline's predictions share no (site, case_id) with the new model's",
            field="case_id",
            expected="both models scored on the same cases",
        )
    metrics = [m for m in new.metrics if m in base.metrics]
    xn = new.values[matched][:, :, [new.metrics.index(m) for m in metrics]]
    xb = base.values[index[keys[matched]].to_numpy()][:, :, [base.metrics.index(m) for m in metrics]]
    diff = xn - xb
    cases = new.cases.loc[matched].reset_index(drop=True)
    sub = SegmentationCases(cases, new.labels, metrics, diff, np.arange(len(cases)))
    sites = cases["site"].astype(str).to_numpy(dtype=object)

    # each model's mean over the cases its difference is taken on (a case either model excluded is out)
    both = np.where(np.isfinite(diff), 1.0, np.nan)

    def level(mask: np.ndarray, stratified: bool) -> dict:
        blk = segmentation_block(
            diff[mask],
            metrics,
            new.labels,
            settings=settings,
            clusters=sub.clusters(settings, mask),
            strata=sites[mask] if stratified else None,
        )
        with np.errstate(invalid="ignore"):
            mean_new = _point((xn * both)[mask])[:, :, 0].mean(axis=0)
            mean_base = _point((xb * both)[mask])[:, :, 0].mean(axis=0)
        out: dict = {"n_matched": int(mask.sum())}
        if blk.get("insufficient"):
            out.update(insufficient=True, reason=blk["reason"])
        for j, m in enumerate(metrics):
            e = blk[m]
            out[m] = {k: e[k] for k in ("estimate", "ci_low", "ci_high", "method")}
            out[m].update(new=_finite_or_none(mean_new[j]), baseline=_finite_or_none(mean_base[j]))
        return out

    return {
        "difference": "new − baseline: mean over matched cases of the per-case difference",
        "n_unmatched": int((~matched).sum()),
        "overall": level(np.ones(len(cases), dtype=bool), True),
        "sites": {s: level(sites == s, False) for s in dict.fromkeys(sites)},
    }


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def gate_comparison(comparison: dict | None) -> dict | None:
    """segmentation.json's ``comparison`` in the shape gates.py judges ``compare: baseline`` gates on
    (comparison.json's DELTA blocks: ``{"n", "metrics": {m: {"delta", "ci_low", "ci_high", "new",
    "baseline"}}}`` pooled and per site); None without a comparison."""
    if not comparison:
        return None

    def delta_block(level: dict) -> dict:
        out: dict = {"n": level.get("n_matched"), "metrics": {}, "undefined": {}}
        if level.get("insufficient"):
            out.update(insufficient=True, reason=level.get("reason"))
        for m, e in level.items():
            if isinstance(e, dict) and "estimate" in e:
                out["metrics"][m] = {
                    "delta": e["estimate"],
                    "ci_low": e.get("ci_low"),
                    "ci_high": e.get("ci_high"),
                    "new": e.get("new"),
                    "baseline": e.get("baseline"),
                }
                if e["estimate"] is None:
                    out["undefined"][m] = "no case with both models' values"
        return out

    return {
        "overall": delta_block(comparison.get("overall") or {}),
        "sites": {s: delta_block(level) for s, level in (comparison.get("sites") or {}).items()},
    }
