"""Per-site cohorts and curves, computed once into the bundle (``sites.json``, ``curves.json``).

The report and the dashboard draw from these files and never recompute from the predictions:

- :func:`cohort_summary` -> ``sites.json``: per site n, events, prevalence, patients, the make-up of
  each declared (non-intersection) subgroup, and the cases excluded from scoring with their reasons.
- :func:`site_curves` -> ``curves.json``: per site (and pooled) the ROC and precision-recall curves
  with a pointwise bootstrap band, the reliability bins with a Wilson interval per bin, a lowess
  smooth of the observed rate, and a histogram of predictions by outcome; for each calibration
  method of the Calibration JSON, the reliability bins after that calibration at the sites it was
  evaluated on; and under ``subgroups`` (:func:`subgroup_reliability`) the reliability bins of every
  group of every declared subgroup, per site and pooled, as shipped and after each method.

Binary tasks draw on p = P(positive). Multiclass tasks draw the top-label view (confidence = max
probability against "prediction correct") plus one-vs-rest curves per class under ``classes``;
multilabel tasks one set of curves per label under ``classes``.

Curves are thinned to at most :data:`MAX_POINTS` points so a million-case site stays a small file;
the thinning keeps the first and last points and is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from validate.groups import group_sort_key
from validate.metrics.smooth_band import smooth_band
from validate.numerics import wilson_interval  # noqa: F401 - one definition (NaN where n = 0)
from validate.predictions import PredictionsTable, as_table

MAX_POINTS = 400
BAND_GRID = 101
BAND_REPLICATES = 500  # pointwise ROC bands: enough for stable 2.5/97.5% quantiles, bounded cost


def _finite(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _list(a) -> list:
    return [_finite(v) for v in np.asarray(a, dtype=np.float64).tolist()]


def _thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


# ---- statistics drawn in the figures ---------------------------------------------------------------


def _roc_pr_points(y: np.ndarray, p: np.ndarray, score: np.ndarray | None = None) -> dict:
    """ROC (fpr, tpr) and precision-recall points at every distinct threshold, highest first; a case
    is called positive when p >= threshold (as the operating points of the metrics engine).

    ``score`` (default p), monotone in p, is what is ranked: the logits when the model gave them, whose
    distinct values stay distinct where sigmoid rounds them all to 1.0. Thresholds are shown as p."""
    score = p if score is None else np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    ps, ys = p[order], y[order]
    ss = score[order]
    ends = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1]  # last index of each tied run
    tp = np.cumsum(ys)[ends]
    fp = np.cumsum(1 - ys)[ends]
    pos, neg = ys.sum(), ys.size - ys.sum()
    tpr = np.r_[0.0, tp / pos] if pos else np.r_[0.0, np.full(ends.size, np.nan)]
    fpr = np.r_[0.0, fp / neg] if neg else np.r_[0.0, np.full(ends.size, np.nan)]
    thr = np.r_[np.inf, ps[ends]]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / pos if pos else np.full(ends.size, np.nan)
    keep = _thin(tpr.size)
    keep_pr = _thin(precision.size)
    return {
        "roc": {
            "fpr": _list(fpr[keep]),
            "tpr": _list(tpr[keep]),
            "threshold": _list(thr[keep]),
        },  # the first point (nothing called positive) has threshold None
        "pr": {
            "recall": _list(recall[keep_pr]),
            "precision": _list(precision[keep_pr]),
            "threshold": _list(ps[ends][keep_pr]),
            "prevalence": _finite(pos / ys.size) if ys.size else None,
        },
    }


def _roc_band(
    y: np.ndarray, p: np.ndarray, *, clusters, n_rep: int, seed: int, level: float, score: np.ndarray | None = None
) -> dict | None:
    """Pointwise bootstrap band of the ROC curve by vertical averaging (Fawcett 2006, §8): for each
    replicate (the metrics engine's case weights, clustered by patient, seeded) the TPR at a fixed grid
    of FPR values (the step function's upper value at each FPR); the band is the percentile interval of
    those TPRs at each grid point."""
    from validate.metrics import iter_bootstrap_weights, percentile_interval
    from validate.metrics.bootstrap import replicate_chunk

    if n_rep <= 0 or y.min() == y.max():
        return None
    grid = np.linspace(0.0, 1.0, BAND_GRID)
    ps = p if score is None else np.asarray(score, dtype=np.float64)  # ranked as in _roc_pr_points
    order = np.argsort(-ps, kind="stable")
    ys, ps = y[order], ps[order]
    ends = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), ps.size - 1]
    rows = []
    for _, w in iter_bootstrap_weights(n_rep, y.size, clusters=clusters, seed=seed, chunk=replicate_chunk(y.size)):
        ws = w[:, order]
        tp = np.cumsum(ws * ys, axis=1)[:, ends]
        fp = np.cumsum(ws * (1 - ys), axis=1)[:, ends]
        pos, neg = tp[:, -1:], fp[:, -1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = np.c_[np.zeros(len(w)), tp / pos]
            fpr = np.c_[np.zeros(len(w)), fp / neg]
        for r in range(len(w)):
            if not (np.isfinite(tpr[r, -1]) and np.isfinite(fpr[r, -1])):
                continue
            # upper envelope at each grid fpr: the largest tpr reached with fpr <= g
            idx = np.searchsorted(fpr[r], grid, side="right") - 1
            rows.append(tpr[r][idx])
    if not rows:
        return None
    lo, hi = percentile_interval(np.asarray(rows), level)
    return {
        "fpr": _list(grid),
        "tpr_low": _list(lo),
        "tpr_high": _list(hi),
        "replicates": len(rows),
        "method": "bootstrap vertical averaging",
    }


def reliability(y: np.ndarray, p: np.ndarray, *, bins: int, level: float) -> dict:
    """Reliability bins of the metrics engine (equal-width, right-closed, as ECE) with a Wilson
    interval on each bin's observed rate, and a histogram of predictions by outcome on the same bins."""
    from validate.metrics import reliability_bins

    rb = reliability_bins(y, p, bins=bins)
    count = np.asarray(rb["count"])
    events = np.rint(np.asarray(rb["mean_y"]) * count)
    events = np.where(count > 0, events, 0)
    lo, hi = wilson_interval(events, count, level)
    edges = np.asarray(rb["edges"])
    return {
        "edges": _list(edges),
        "count": [int(c) for c in count],
        "events": [int(e) for e in events],
        "mean_predicted": _list(rb["mean_p"]),
        "observed": _list(rb["mean_y"]),
        "observed_low": _list(lo),
        "observed_high": _list(hi),
        "interval": "wilson",
    }


def _smooth(y: np.ndarray, p: np.ndarray) -> dict | None:
    """The lowess smooth s(p) of ``rms::val.prob`` (the metrics engine's :func:`clowess`), thinned."""
    from validate.metrics import clowess

    if y.size < 3 or np.ptp(p) == 0:
        return None
    order = np.argsort(p, kind="stable")
    xs = p[order]
    fit = np.clip(clowess(xs, y[order].astype(np.float64)), 0, 1)
    keep = _thin(xs.size, 200)
    return {"p": _list(xs[keep]), "observed": _list(fit[keep]), "method": "lowess f=2/3 iter=0"}


def binary_curves(
    y,
    p,
    *,
    bins: int = 15,
    level: float = 0.95,
    clusters=None,
    n_rep: int = 0,
    seed: int = 0,
    smooth: bool = True,
    score=None,
    strata=None,
) -> dict:
    """Every curve of one set of binary cases (see the module docstring). ``score``: what the ROC and
    precision-recall curves rank (the logits when given; default p). ``strata`` (the sites of pooled
    cases) shape the replicates of the smooths' band as they shape the metrics' intervals."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    out: dict[str, Any] = {"n": int(y.size), "n_events": int(y.sum())}
    if y.size == 0:
        return out
    out.update(_roc_pr_points(y, p, score))
    band = _roc_band(y, p, clusters=clusters, n_rep=min(n_rep, BAND_REPLICATES), seed=seed, level=level, score=score)
    if band:
        out["roc"]["band"] = band
    out["reliability"] = reliability(y, p, bins=bins, level=level)
    if smooth:
        sm = _smooth(y, p)
        if sm:
            out["smooth"] = sm
        sb = smooth_band(
            y, p, n_rep=min(n_rep, BAND_REPLICATES), seed=seed, level=level, clusters=clusters, strata=strata
        )
        if sb:
            out["reliability"]["smooth_band"] = sb
    return out


# ---- tables -> curves.json ---------------------------------------------------------------------------


def _curves_of(table: PredictionsTable, settings, cluster_col: str | None, smooth: bool, pooled: bool = False) -> dict:
    """Every curve of one set of cases: probabilities and ranking scores come from the table
    (:meth:`~validate.predictions.PredictionsTable.probabilities`, ``.scores()``: the logits when given).
    ``pooled``: the cases of several sites, resampled within each site (as the pooled metrics block)."""
    kw = dict(
        strata=table.site_ids if pooled else None,
        bins=settings.bins,
        level=settings.ci_level,
        n_rep=settings.n_bootstrap,
        seed=settings.seed,
        clusters=table.clusters(cluster_col),
        smooth=smooth,
    )
    y, P, S = table.labels(), table.probabilities(), table.scores()
    if table.task == "binary":
        return binary_curves(y, P, score=S, **kw)
    names = table.names
    if table.task == "multiclass":
        conf, pred = P.max(axis=1), P.argmax(axis=1)
        # the largest one-vs-rest log-odds ranks as the largest probability (same increasing map per class)
        out = {
            "n": int(y.size),
            "top_label": binary_curves((pred == y).astype(float), conf, score=S.max(axis=1), **{**kw, "n_rep": 0}),
        }
        out["classes"] = {
            c: binary_curves((y == k).astype(float), P[:, k], score=S[:, k], **kw) for k, c in enumerate(names)
        }
        return out
    out = {"n": int(len(table))}
    out["classes"] = {lab: binary_curves(y[:, j], P[:, j], score=S[:, j], **kw) for j, lab in enumerate(names)}
    return out


def site_curves(
    table,
    *,
    task: str,
    names: Sequence[str],
    settings,
    sites: Sequence[str] | None = None,
    calibration: Mapping | None = None,
    fit_on: Sequence[str] = (),
    smooth: bool = True,
    groups=None,
) -> dict:
    """``curves.json``: curves per site and pooled, plus reliability after each calibration method, and
    (given ``groups``) the reliability bins per subgroup (:func:`subgroup_reliability`), and (binary, with
    a ``decision`` section in the settings) the decision curve (:mod:`validate.analysis.decision`).

    ``table``: the predictions table (a :class:`~validate.predictions.PredictionsTable`, or a DataFrame
    read through :func:`~validate.predictions.as_table`; original identifiers are not needed and not
    stored); ``names``: class names (multiclass) or label names (multilabel), unused for binary; ``settings``: the
    :class:`validate.metrics.MetricSettings` (bins, ci_level, n_bootstrap, seed, cluster_by);
    ``calibration``: the Calibration JSON whose fitted parameters are applied to the sites it evaluated
    (sites in ``fit_on`` are skipped: which of their cases were held out is not recorded); ``groups``: the
    subgroup columns of :func:`validate.cohort.derive_subgroups`, row-aligned with ``table``.
    """
    table = as_table(table, task=task, **_names(task, names))
    cluster_col = settings.cluster_by
    sites = list(sites) if sites is not None else sorted(set(table.site_ids.astype(str)))
    out: dict[str, Any] = {
        "task": task,
        "bins": settings.bins,
        "ci_level": settings.ci_level,
        "band_replicates": min(settings.n_bootstrap, BAND_REPLICATES),
        "sites": {},
    }
    for s, part in table.by_site(sites):
        out["sites"][s] = _curves_of(part, settings, cluster_col, smooth)
    out["overall"] = _curves_of(table, settings, cluster_col, smooth, pooled=True)
    if task == "binary" and getattr(settings, "decision_range", None) is not None:
        from validate.analysis.decision import decision_curves

        out["decision"] = decision_curves(table, settings=settings, sites=sites)
    if calibration and task == "binary":
        out["calibrated"] = calibrated_reliability(table, calibration, settings=settings, sites=sites, fit_on=fit_on)
    if groups is not None and len(groups.columns) and task != "multilabel":
        out["subgroups"] = subgroup_reliability(
            table, groups, settings=settings, sites=sites, calibration=calibration, fit_on=fit_on
        )
    return out


def _names(task: str, names: Sequence[str] | None) -> dict:
    """The class or label names of ``task`` as :func:`~validate.predictions.as_table` takes them."""
    if not names or task == "binary":
        return {}
    return {"class_names" if task == "multiclass" else "label_names": list(names)}


def calibrated_reliability(
    table, calibration: Mapping, *, settings, sites: Sequence[str], fit_on: Sequence[str] = ()
) -> dict:
    """Reliability bins and histograms after each fitted method (binary), rebuilt from its parameters
    and applied to the table's logits (derived from p after the floor when only p was given)."""
    table = as_table(table, task="binary")
    z, y = table.logits(), table.labels()
    site_col = table.site_ids.astype(str)
    out: dict[str, Any] = {}
    for method, cal, evaluated in _fitted_methods(calibration, sites, fit_on):
        per_site = {}
        for s in evaluated:
            mask = site_col == s
            p = _calibrated(cal, z[mask])
            per_site[s] = {
                "n": int(mask.sum()),
                "n_events": int(y[mask].sum()),
                "reliability": reliability(y[mask], p, bins=settings.bins, level=settings.ci_level),
            }
        out[method] = {"sites": per_site}
    return out


def _fitted_methods(calibration: Mapping | None, sites: Sequence[str], fit_on: Sequence[str]) -> list:
    """(method, calibrator rebuilt from its fitted parameters, the sites of ``sites`` it was evaluated on)
    for each method of the Calibration JSON with a successful fit (``params`` None: the fit failed),
    leaving out ``"none"`` and the sites in ``fit_on``."""
    from validate.calibrators import calibrator_from_json

    out = []
    for method, spec in sorted(((calibration or {}).get("methods") or {}).items()):
        evaluated = [s for s in sites if s in (spec.get("sites") or {}) and s not in fit_on]
        if method == "none" or not evaluated or spec.get("params") is None:
            continue
        out.append((method, calibrator_from_json(method, "binary", spec["params"]), evaluated))
    return out


def _calibrated(cal, z: np.ndarray) -> np.ndarray:
    """P(positive) after calibrator ``cal`` applied to the logits ``z``."""
    p = np.asarray(cal.predict_proba(z), dtype=np.float64)
    return p[:, -1] if p.ndim == 2 else p


# ---- reliability per subgroup -> curves.json "subgroups" --------------------------------------------


def _reliability_cases(table: PredictionsTable) -> tuple[np.ndarray, np.ndarray]:
    """(outcome, prediction) of each case as its reliability diagram bins them: binary y against
    P(positive); multiclass the top-label view, "prediction correct" against the top probability."""
    y, P = table.labels(), table.probabilities()
    if table.task == "multiclass":
        return (P.argmax(axis=1) == y).astype(np.float64), P.max(axis=1)
    return y, P


def _group_cells(y, by_method: Mapping[str, np.ndarray], col: np.ndarray, values: Sequence[str], *, settings) -> dict:
    """``{group: {method: {n, n_events, reliability}}}`` for the groups of ``values`` with cases in
    ``col`` (a group without cases has no diagram, so no entry)."""
    cells: dict[str, Any] = {}
    for g in values:
        mask = col == g
        if not mask.any():
            continue
        ym = y[mask]
        cells[g] = {
            m: {
                "n": int(mask.sum()),
                "n_events": int(ym.sum()),
                "reliability": reliability(ym, p[mask], bins=settings.bins, level=settings.ci_level),
            }
            for m, p in by_method.items()
        }
    return cells


def subgroup_reliability(
    table, groups, *, settings, sites: Sequence[str], calibration: Mapping | None = None, fit_on: Sequence[str] = ()
) -> dict:
    """The reliability bins of every group of every declared subgroup (bands and intersections
    included), per site and pooled over sites (``overall``): the diagrams of the dashboard's
    Reliability page with a subgroup filter, computed once here so that no presentation recomputes them.

    Each cell holds, per method, ``n``, ``n_events`` and the bins of :func:`reliability` (equal-width,
    right-closed, Wilson interval per bin) of the group's cases at that level: ``"none"`` as shipped
    (binary: P(positive); multiclass: the top-label confidence against "prediction correct"), and for
    binary tasks at each site where a method of ``calibration`` was evaluated (not in ``fit_on``), the
    same cases after that method (:func:`calibrated_reliability`, restricted to the group). Only bins
    are stored, never a case's values; a group with cases, however few, has its diagram (the page marks
    small groups by their ``n``), a group without cases none.

    ``groups``: the subgroup columns of :func:`validate.cohort.derive_subgroups`, row-aligned with
    ``table``. ``attributes`` and ``groups`` in the output give the subgroup and group order
    (:func:`validate.groups.group_sort_key`), as in ``subgroups.json``.
    """
    table = as_table(table)
    if len(groups) != len(table):
        raise ValueError(f"subgroup columns hold {len(groups)} rows for {len(table)} predictions")
    attrs = [str(a) for a in groups.columns]
    cols = {a: groups[a].astype(str).to_numpy() for a in attrs}
    order = {a: sorted(set(cols[a]), key=group_sort_key) for a in attrs}
    y, p = _reliability_cases(table)
    site_col = table.site_ids.astype(str)
    methods = _fitted_methods(calibration, sites, fit_on) if table.task == "binary" else []
    z = table.logits() if methods else np.empty(len(table))
    out: dict[str, Any] = {"attributes": attrs, "groups": order, "sites": {}}
    for s in sites:
        at = site_col == s
        if not at.any():
            continue
        by_method = {"none": p[at]}
        by_method.update({m: _calibrated(cal, z[at]) for m, cal, evaluated in methods if s in evaluated})
        out["sites"][s] = {a: _group_cells(y[at], by_method, cols[a][at], order[a], settings=settings) for a in attrs}
    out["overall"] = {a: _group_cells(y, {"none": p}, cols[a], order[a], settings=settings) for a in attrs}
    return out


# ---- sites.json ------------------------------------------------------------------------------------


def cohort_summary(table, protocol, groups=None, failures=None, *, ci_level: float = 0.95) -> dict:
    """``sites.json``: per site n, events, prevalence (Wilson interval), patients, subgroup make-up and
    exclusions.

    ``groups``: the subgroup columns of :func:`validate.cohort.derive_subgroups` (aligned with
    ``table``); ``failures``: the scoring failures (columns ``site``, ``reason``) — counted by reason,
    never listed by case.
    """
    task = protocol.task
    classes = list(getattr(protocol, "classes", None) or [])
    table = as_table(
        table, task=task, **_names(task, classes if task == "multiclass" else getattr(protocol, "labels", None))
    )
    site_col = table.site_ids.astype(str)
    y = table.labels()
    plain = [g.name for g in protocol.subgroups if not g.intersection]
    out: dict[str, Any] = {"task": task, "ci_level": ci_level, "sites": {}}
    for site in protocol.sites:
        mask = site_col == site.id
        n = int(mask.sum())
        entry: dict[str, Any] = {"name": site.display_name, "role": site.role, "n": n}
        entry["patients"] = int(len(set(table.patient_ids[mask])))
        if task == "binary" and n:
            ev = int(y[mask].sum())
            lo, hi = wilson_interval(ev, n, ci_level)
            entry.update(
                n_events=ev,
                prevalence={"estimate": ev / n, "ci_low": _finite(lo), "ci_high": _finite(hi), "method": "wilson"},
            )
        elif task == "multiclass" and n:
            counts = np.bincount(y[mask], minlength=len(classes))
            entry["classes"] = {c: int(k) for c, k in zip(classes, counts, strict=True)}
        elif task == "multilabel" and n:
            entry["labels"] = {
                lab: {"n_events": int(y[mask, j].sum()), "prevalence": float(y[mask, j].mean())}
                for j, lab in enumerate(table.names)
            }
        entry["make_up"] = make_up(groups, mask, plain)
        excluded = excluded_by_reason(failures, site.id)
        entry["excluded"] = excluded
        entry["n_excluded"] = int(sum(excluded.values()))
        out["sites"][site.id] = entry
    return out


def make_up(groups: Any, mask: np.ndarray, names: list[str]) -> dict[str, dict[str, int]]:
    """A site's subgroup make-up: per subgroup name, the cases of each group (groups in display order)."""
    out: dict[str, dict[str, int]] = {}
    if groups is None:
        return out
    part = groups[mask]
    for name in names:
        if name in part.columns:
            vc = part[name].value_counts()
            out[name] = {str(k): int(vc[k]) for k in sorted(vc.index, key=group_sort_key)}
    return out


def excluded_by_reason(failures: Any, site_id: str) -> dict[str, int]:
    """A site's scoring failures counted by kind of reason (:func:`_reason_kind`)."""
    excluded: dict[str, int] = {}
    if failures is not None and len(failures):
        f = failures[failures["site"].astype(str) == site_id]
        for reason, k in f["reason"].astype(str).map(_reason_kind).value_counts().sort_index().items():
            excluded[str(reason)] = int(k)
    return excluded


def _reason_kind(reason: str) -> str:
    """A failure reason without case-specific details (paths, numbers), so it can be counted."""
    text = reason.split(":")[0].strip()
    return text[:120] or "unknown"
