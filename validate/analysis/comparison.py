"""Paired model-versus-model comparison (``comparison.json``): Δ = new − baseline on the same cases.

Two predictions tables of a binary task are matched case by case on (site, case_id)
(:func:`match_cases`); labels of matched cases must agree. Every block — pooled over sites, each site,
each subgroup value pooled over sites, each subgroup value within each site, the blocks of
``metrics.json`` and ``subgroups.json`` — gets, for every registered binary metric with a direction
(:mod:`validate.metrics.registry`), the estimate of each model and the difference with a paired interval:

- **AUROC**: the paired DeLong test on the ranking scores (the logits where given; DeLong, DeLong &
  Clarke-Pearson 1988), as R's ``pROC::roc.test(roc1, roc2, paired = TRUE, method = "delong")``:
  interval Δ ± z_{(1+level)/2} √(L S L'), two-sided p = 2 Φ(−|z|)
  (:func:`validate.metrics.discrimination.delong_paired_test`). Method ``"delong_paired"``.
- **every other metric**: the paired bootstrap. Replicate b draws frequency weights w_b exactly as the
  block of ``metrics.json`` does (:func:`validate.metrics.bootstrap.iter_bootstrap_weights`: the
  protocol's seed and replicate count, patient clusters, stratified by site where the block pools
  sites), and the Δ replicate is f(new, w_b) − f(baseline, w_b) with the registry's replicate kernels,
  the same weights for both models. The interval is the type-7 percentile interval of the finite Δ
  replicates (a replicate where either model's metric is undefined is left out; Efron & Tibshirani
  1993, §13.3). Method ``"bootstrap_paired"``, ``p_value`` null. Calibration intercept and slope
  (Wald intervals in ``metrics.json``) are refitted per replicate by weighted maximum likelihood
  (:func:`_recalibration_replicates`). The smoothed calibration errors (eavg, e50, e90, emax, ici) cost
  one smoother fit per replicate and model: their Δ has an interval only with ``smooth_intervals=True``
  (else null, with a ``note``).
- operating-point metrics at each of the protocol's thresholds (the first under the plain name, all
  under ``operating_points``).

Because the Δ replicates share weights, the interval accounts for the correlation of the two models'
errors on the same patients; it is narrower than combining two independent intervals (MOVER) whenever
the models agree case by case. The same predictions as both models give Δ = 0 and both bounds exactly 0.

Blocks below the insufficiency rule (:func:`validate.metrics.blocks.insufficiency`) are marked, not
dropped; metrics undefined in a block (one class present, no positive call, ...) are listed under
``undefined`` with the reason. Undefined numbers are null, never NaN.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from validate.errors import InputError
from validate.metrics import registry
from validate.metrics.blocks import BOOTSTRAP_CHUNK, _in_order, insufficiency
from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval, replicate_chunk
from validate.metrics.replicates import BinaryCases
from validate.metrics.report import MISSING_VALUE, _clusters
from validate.metrics.settings import MetricSettings
from validate.predictions import PredictionsTable

BINARY_ONLY = "paired comparison supports binary tasks"
DELONG, BOOTSTRAP = "delong_paired", "bootstrap_paired"
SMOOTH_NOTE = (
    "paired interval not computed: the smoothed errors need one smoother fit per replicate and model "
    "(smooth_intervals=True computes it)"
)


# ---- matching ---------------------------------------------------------------------------------------


def _keys(table: PredictionsTable) -> pd.Index:
    return pd.MultiIndex.from_arrays(
        [table.frame["site"].astype(str), table.frame["case_id"].astype(str)], names=["site", "case_id"]
    )


def _require_binary(table: PredictionsTable, which: str) -> None:
    if table.task != "binary":
        raise InputError(
            f"{BINARY_ONLY}; the {which} predictions hold a {table.task} task",
            file=table.path,
            expected="binary predictions (columns y and logit or p) for both models",
        )


def match_cases(new: PredictionsTable, baseline: PredictionsTable) -> tuple[PredictionsTable, PredictionsTable, dict]:
    """The cases both models scored, matched on (site, case_id), in the new table's row order.

    Returns ``(new_matched, baseline_matched, matched)``: the two tables restricted to the common cases,
    row i of one being row i of the other, and ``matched = {"n", "n_new_only", "n_baseline_only",
    "sites": {site: n}}``. Cases scored by one model only are left out and counted. Raises
    :class:`InputError` for a non-binary task, a matched case whose labels differ (naming the first
    such site and case), or no common case at all.
    """
    _require_binary(new, "new")
    _require_binary(baseline, "baseline")
    k_new, k_base = _keys(new), _keys(baseline)
    for keys, table, which in ((k_new, new, "new"), (k_base, baseline, "baseline")):
        dup = keys.duplicated()
        if dup.any():
            site, case = keys[int(np.flatnonzero(dup)[0])]
            raise InputError(
                f"case {case!r} of site {site!r} appears twice in the {which} predictions",
                file=table.path,
                field="case_id",
                expected="one row per (site, case_id)",
            )
    position = pd.Series(np.arange(len(k_base)), index=k_base)
    in_base = k_new.isin(k_base)
    n_common = int(in_base.sum())
    if n_common == 0:
        raise InputError(
            "no case is in both predictions: they are matched on (site, case_id)",
            file=baseline.path,
            field="case_id",
            expected="predictions of the same cases (same site ids and case ids) by both models",
        )
    rows_new = np.flatnonzero(in_base)
    rows_base = position.reindex(k_new[in_base]).to_numpy(dtype=np.intp)
    new_m = new.subset(in_base)
    base_m = PredictionsTable(
        baseline.frame.iloc[rows_base].reset_index(drop=True),
        baseline.task,
        baseline.names,
        baseline.path,
        baseline.given,
        list(baseline.notes),
    )
    differ = np.flatnonzero(new_m.y() != base_m.y())
    if differ.size:
        i = int(differ[0])
        site, case = k_new[rows_new[i]]
        raise InputError(
            f"the label of case {case!r} at site {site!r} is {int(new_m.y()[i])} in the new predictions "
            f"but {int(base_m.y()[i])} in the baseline predictions"
            + (f" ({differ.size} matched cases differ)" if differ.size > 1 else ""),
            file=baseline.path,
            row=int(rows_base[i]) + 1,
            field="y",
            expected="the same label for a case in both predictions (the same cohort)",
        )
    sites = new_m.frame["site"].astype(str).value_counts(sort=False)
    matched = {
        "n": n_common,
        "n_new_only": int(len(new) - n_common),
        "n_baseline_only": int(len(baseline) - n_common),
        "sites": {s: int(sites[s]) for s in new_m.sites()},
    }
    return new_m, base_m, matched


# ---- one block ----------------------------------------------------------------------------------------


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def compared_metrics() -> list[registry.Metric]:
    """The registered binary metrics a comparison gives a Δ for: those of a BLOCK with a direction
    (better or worse is defined), i.e. not the tests, not the prevalence (the same for both models), nor
    the net-benefit family at decision thresholds (a block's ``decision`` items; not compared yet)."""
    return [m for m in registry.metrics_for("binary") if m.direction is not None and not m.at_decision]


class _Model:
    """One model's cases of one block, sorted once by its ranking score (the replicate kernels' input)."""

    def __init__(self, y: np.ndarray, table: PredictionsTable, mask: np.ndarray, bins: int):
        self.p = table.prob()[mask]
        self.logits = table.logit()[mask]
        self.score = table.score()[mask]
        self.cases = BinaryCases(y, self.p, bins, logits=self.logits, score=self.score)

    def point(self, thresholds: list[float], level: float) -> dict[str, float]:
        """Every compared metric's estimate (operating points as ``name@threshold``), as in the BLOCK."""
        c = self.cases
        ones = np.ones((1, c.n))
        out = {k: float(v[0]) for k, v in c.replicate(ones, thresholds, want_smooth=False, auroc=True).items()}
        for m in compared_metrics():
            if m.point is None:
                continue
            if m.smooth:
                out[m.name] = float(m.point(c, level))
            elif m.interval == "wald":
                fit = m.point(c, level)
                # as the metrics block: a fit that did not converge is undefined where the registry says why
                undefined = not fit.get("converged", True) and m.why_undefined
                out[m.name] = float("nan") if undefined else float(fit["estimate"])
        return out

    def replicates(self, w: np.ndarray, thresholds: list[float], smooth: bool) -> dict[str, np.ndarray]:
        """Every compared metric (AUROC aside) of replicate weights ``w`` (k, n) given in case order."""
        c = self.cases
        out = c.replicate(_in_order(w, c.order), thresholds, want_smooth=smooth)
        out["calibration_intercept"] = _recalibration_replicates(c.y_in, self.logits, w, slope=False)
        out["calibration_slope"] = _recalibration_replicates(c.y_in, self.logits, w, slope=True)
        return out


def _recalibration_replicates(
    y: np.ndarray, z: np.ndarray, w: np.ndarray, *, slope: bool, max_iter: int = 100, tol: float = 1e-12
) -> np.ndarray:
    """Calibration intercept (slope fixed at 1: logit P = α + z) or slope (logit P = α + β z) of each
    row of frequency weights ``w`` (k, n): weighted maximum likelihood by Newton–Raphson, all
    replicates at once, from α = 0 (β = 1), until |step| < ``tol``·max(1, |θ|) (as
    :func:`validate.metrics.calibration.calibration_intercept` / ``calibration_slope``, whose estimates
    these are at unit weights). A replicate without a finite maximum (one class drawn, or separation:
    the estimate runs past 1e6 or has not converged after ``max_iter`` steps) is NaN, as the block
    calls such a fit undefined."""
    from scipy.special import expit

    k = w.shape[0]
    theta = np.zeros((k, 2))
    theta[:, 1] = 1.0
    events = w @ y
    ok = (events > 0) & (events < w.sum(axis=1))
    done = ~ok
    converged = np.zeros(k, dtype=bool)
    with np.errstate(all="ignore"):
        for _ in range(max_iter):
            act = np.flatnonzero(~done)
            if act.size == 0:
                break
            wa, a, b = w[act], theta[act, 0], theta[act, 1]
            eta = a[:, None] + b[:, None] * z[None, :]
            mu = expit(eta)
            resid = wa * (y[None, :] - mu)
            v = wa * (mu * expit(-eta))  # p(1 − p) without the cancellation of 1 − p at large logits
            g0, h00 = resid.sum(axis=1), v.sum(axis=1)
            if slope:
                g1, h01, h11 = resid @ z, v @ z, v @ (z * z)
                det = h00 * h11 - h01 * h01
                step = np.column_stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det])
            else:
                step = np.column_stack([g0 / h00, np.zeros(act.size)])
            theta[act] += step
            small = np.all(np.abs(step) < tol * np.maximum(1.0, np.abs(theta[act])), axis=1)
            bad = ~np.all(np.isfinite(theta[act]), axis=1) | np.any(np.abs(theta[act]) > 1e6, axis=1)
            converged[act[small & ~bad]] = True
            done[act[small | bad]] = True
    est = theta[:, 1] if slope else theta[:, 0]
    return np.where(converged & ok, est, np.nan)


def _delta_entry(
    new: float | None, base: float | None, reps: np.ndarray | None, level: float, method: str = BOOTSTRAP
) -> dict:
    delta = _num(new - base) if new is not None and base is not None else None
    lo = hi = None
    if delta is not None and reps is not None:
        lo, hi = (_num(v) for v in percentile_interval(reps, level))
    return {
        "new": new,
        "baseline": base,
        "delta": delta,
        "ci_low": lo,
        "ci_high": hi,
        "method": method,
        "p_value": None,
    }


def _auroc_entry(y: np.ndarray, new: _Model, base: _Model, level: float) -> dict:
    """Paired DeLong on the ranking scores; the interval and p-value need two cases of each class."""
    from validate.metrics.discrimination import auroc, delong_paired_test

    events = int(y.sum())
    if min(events, y.size - events) < 2:
        return _delta_entry(_num(auroc(y, new.score)), _num(auroc(y, base.score)), None, level, DELONG)
    t = delong_paired_test(y, new.score, base.score, level=level)
    return {
        "new": _num(t["auc1"]),
        "baseline": _num(t["auc2"]),
        "delta": _num(t["difference"]),
        "ci_low": _num(t["ci_low"]),
        "ci_high": _num(t["ci_high"]),
        "method": DELONG,
        "p_value": _num(t["p_value"]),
    }


def _why(
    metric: registry.Metric,
    one_class: bool,
    events: int,
    n: int,
    threshold: float | None,
    new: float | None,
    base: float | None,
) -> str:
    if one_class and metric.one_class is not None:
        single = f"only one class present ({'no events' if events == 0 else 'no non-events'})"
        return single + (f": {metric.one_class}" if metric.one_class else "")
    if metric.at_threshold:
        from validate.metrics.blocks import _op_reason

        detail = _op_reason(metric.name, float(threshold if threshold is not None else "nan"))
    else:
        detail = metric.why_undefined or "no value"
    who = "both models" if new is None and base is None else ("the new model" if new is None else "the baseline")
    return f"undefined for {who}: {detail}"


def delta_block(
    y: np.ndarray,
    new: PredictionsTable,
    baseline: PredictionsTable,
    mask: np.ndarray,
    *,
    settings: MetricSettings,
    clusters=None,
    strata=None,
    smooth_intervals: bool = False,
) -> dict:
    """The DELTA_BLOCK of the cases ``mask`` selects (see the module docstring). ``y`` the matched labels,
    ``new``/``baseline`` the matched tables (row i the same case), ``clusters``/``strata`` over the
    selected cases as the metrics block gets them."""
    y = y[mask]
    n, events = int(y.size), int(y.sum())
    block: dict[str, Any] = {
        "n": n,
        "n_events": events,
        "insufficient": False,
        "reason": None,
        "metrics": {},
        "undefined": {},
    }
    if n == 0:
        block.update(insufficient=True, reason="no cases")
        return block
    level = settings.ci_level
    thresholds = [float(t) for t in settings.thresholds]
    models = (_Model(y, new, mask, settings.bins), _Model(y, baseline, mask, settings.bins))
    points = [m.point(thresholds, level) for m in models]
    reps = _delta_replicates(models, n, settings, clusters, strata, thresholds, smooth_intervals)
    one_class = events in (0, n)
    ops: list[dict] = [{"threshold": t, "metrics": {}} for t in thresholds]
    for m in compared_metrics():
        keys = [(f"{m.name}@{t!r}", i) for i, t in enumerate(thresholds)] if m.at_threshold else [(m.name, None)]
        for key, i in keys:
            new_v, base_v = _num(points[0].get(key)), _num(points[1].get(key))
            if one_class and m.one_class is not None or new_v is None or base_v is None:
                if i in (None, 0):
                    block["undefined"][m.name] = _why(
                        m, one_class, events, n, thresholds[i] if i is not None else None, new_v, base_v
                    )
                continue
            if m.interval == "delong":
                entry = _auroc_entry(y, *models, level)
            else:
                entry = _delta_entry(new_v, base_v, reps.get(key), level)
                if m.smooth and key not in reps and settings.n_bootstrap > 0:
                    entry["note"] = SMOOTH_NOTE
            if i is not None:
                ops[i]["metrics"][m.name] = entry
            if i in (None, 0):
                block["metrics"][m.name] = entry
    if thresholds:
        block["operating_points"] = ops
    reason = insufficiency(n, {"events": events, "non-events": n - events}, settings)
    if reason:
        block.update(insufficient=True, reason=reason)
    return block


def _delta_replicates(
    models: tuple[_Model, _Model],
    n: int,
    settings: MetricSettings,
    clusters,
    strata,
    thresholds: list[float],
    smooth: bool,
) -> dict[str, np.ndarray]:
    """``{metric key: Δ replicates}``: both models' metrics on the same replicate weights, chunk by chunk."""
    if settings.n_bootstrap <= 0:
        return {}
    parts: dict[str, list[np.ndarray]] = {}
    for _, w in iter_bootstrap_weights(
        settings.n_bootstrap,
        n,
        clusters=clusters,
        strata=strata,
        seed=settings.seed,
        chunk=replicate_chunk(n, BOOTSTRAP_CHUNK),
    ):
        new, base = (m.replicates(w, thresholds, smooth) for m in models)
        with np.errstate(invalid="ignore"):
            for k, v in new.items():
                if k in base:
                    parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64) - np.asarray(base[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}


# ---- the comparison -----------------------------------------------------------------------------------


def _identity(table: PredictionsTable, label: str) -> dict:
    """Label, file name (never an absolute path) and SHA-256 of the predictions file, where there is one."""
    path = Path(table.path) if table.path is not None else None
    sha = None
    if path is not None and path.is_file():
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"label": label, "source": path.name if path is not None else None, "sha256": sha}


def _group_labels(values: pd.Series, new: PredictionsTable, keep: np.ndarray, n: int, attr: str) -> np.ndarray:
    """Subgroup values of the matched cases as strings (missing as ``"missing"``): ``values`` aligned
    with the matched cases, or with the new table's rows (then restricted to the matched ones)."""
    v = pd.Series(values).reset_index(drop=True)
    if len(v) == n:
        pass
    elif len(v) == len(new):
        v = v[keep].reset_index(drop=True)
    else:
        raise ValueError(f"subgroup {attr!r} has {len(v)} values for {n} matched cases ({len(new)} new cases)")
    return v.map(lambda x: MISSING_VALUE if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)).to_numpy(
        dtype=object
    )


def compare(
    new: PredictionsTable,
    baseline: PredictionsTable,
    *,
    settings: MetricSettings,
    subgroups: Mapping[str, pd.Series] | None = None,
    sites: Sequence[str] | None = None,
    new_label: str = "new",
    baseline_label: str = "baseline",
    smooth_intervals: bool = False,
) -> dict:
    """The ``comparison.json`` content (contract :class:`validate.contract.ComparisonFile`) of ``new``
    against ``baseline`` on the cases both scored (see the module docstring).

    ``settings``: the protocol's metric settings (seed, replicates, level, bins, thresholds, patient
    clusters, insufficiency rule). ``subgroups``: attribute → each case's group, aligned with the
    matched cases (:func:`match_cases`' order, the new table's row order) or with the new table's rows.
    ``sites``: the sites reported and their order (default: the new table's order of appearance).
    ``smooth_intervals``: also bootstrap the smoothed calibration errors (one smoother fit per replicate).
    """
    new_m, base_m, matched = match_cases(new, baseline)
    frame = new_m.frame
    y = new_m.y()
    site_ids = frame["site"].astype(str).to_numpy(dtype=object)
    present = list(matched["sites"])
    order = [str(s) for s in sites if str(s) in matched["sites"]] if sites is not None else present

    def block(mask: np.ndarray, stratified: bool) -> dict:
        sub = frame.loc[mask]
        return delta_block(
            y,
            new_m,
            base_m,
            mask,
            clusters=_clusters(sub, settings),
            strata=site_ids[mask] if stratified else None,
            settings=settings,
            smooth_intervals=smooth_intervals,
        )

    everyone = np.ones(len(frame), dtype=bool)
    overall = block(everyone, True)
    out: dict[str, Any] = {
        "new": _identity(new, new_label),
        "baseline": _identity(baseline, baseline_label),
        "level": settings.ci_level,
        "n_boot": settings.n_bootstrap,
        "seed": settings.seed,
        "matched": matched,
        "overall": overall,
        "sites": {},
        "subgroups": {},
        "metrics": [m.name for m in compared_metrics()],
        "definition": "delta = new - baseline on the matched cases; AUROC: paired DeLong; other metrics: "
        "percentile interval of the paired bootstrap (the same replicate weights for both models)",
    }
    for s in order:
        # one site: its block is the pooled block (the same cases, one stratum, the same weights)
        out["sites"][s] = overall if len(present) == 1 else block(site_ids == s, False)
    keep = np.asarray(_keys(new).isin(_keys(baseline)), dtype=bool)
    for attr, values in (subgroups or {}).items():
        labels = _group_labels(values, new, keep, len(frame), attr)
        cells: dict[str, Any] = {}
        for g in sorted(set(labels), key=_group_key):
            in_group = labels == g
            cell: dict[str, Any] = {"overall": block(in_group, True), "sites": {}}
            for s in order:
                mask = in_group & (site_ids == s)
                if mask.any():
                    cell["sites"][s] = block(mask, False)
            cells[g] = cell
        out["subgroups"][attr] = cells
    return out


def _group_key(g: str):
    from validate.groups import group_sort_key

    return group_sort_key(g)
