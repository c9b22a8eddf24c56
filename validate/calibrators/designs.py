"""Cross-site comparison of calibration methods: the held-out, local, transfer and sample-size designs.

:func:`compare_calibration` is the one entry point; it returns the Calibration JSON of DESIGN.md.
The fixed keys (``task``, ``design``, ``fit_on``, ``methods``, ``recommended``) always describe the
**held-out** comparison — calibrators fitted on the ``fit_on`` sites (the deployable fits, whose
``params`` ``validate apply-calibration`` uses) and evaluated on cases not used for fitting — and the
other requested designs are added under ``designs``:

- ``held-out``: fit on the ``fit_on`` sites (all their cases, or a seeded, label-stratified
  ``fit_fraction`` of them whose remainder is evaluated under the fit site's id); evaluate on every
  other site. Per method and site, the metrics engine's BLOCK, plus a paired bootstrap interval of the
  method's change against the uncalibrated predictions (method ``none``) on the same cases and the same
  replicates, for ECE, Brier score and log loss (``change_vs_none``).
- ``local``: for each external site, fit on a seeded, label-stratified random ``local_fraction`` of
  the site and evaluate on the rest, ``repeats`` times; mean, SD and 2.5/97.5 % quantiles over repeats.
- ``transfer``: fit on site i (all of it), evaluate on site j, for every ordered pair i != j (the
  diagonal is the local design); point estimates in a matrix per method and metric.
- ``sample-size``: local recalibration with each of ``sample_sizes`` fitting cases (sizes that leave
  fewer than :data:`MIN_EVAL_CASES` cases to evaluate are skipped), ``repeats`` times; mean and spread
  of ECE and log loss, and how often recalibration beat ``none`` — how many labelled local cases a site
  needs before recalibration helps rather than hurts.

In the repeated designs a fit that fails (:class:`CalibrationFitError`: one class only among the drawn
cases, perfect separation, ...) falls back to the uncalibrated predictions for that repeat — what a site
would be left with — and is counted under ``fallbacks`` with the first reason. In held-out, a failed
fit is reported as the method's ``error`` and the method is left out of the recommendation.

The recommendation is the method with the best mean rank over the external sites, ranking methods
(``none`` included) at each site by ECE, Brier score and log loss and averaging the three ranks; a
``note`` says when the winner's intervals overlap the runner-up's or its change against ``none``
includes 0 (the data do not clearly separate them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from validate import progress
from validate.calibrators.base import MIN_FIT_CASES, CalibrationFitError
from validate.calibrators.binning import predicted_class_changed
from validate.calibrators.registry import check_method, export_params, get_calibrator
from validate.errors import InputError
from validate.metrics import registry
from validate.metrics.settings import section_values

DESIGNS = ("held-out", "local", "transfer", "sample-size")
#: Fewest cases left for evaluation in the local and sample-size designs.
MIN_EVAL_CASES = 20
#: The metrics that rank methods and get paired intervals: the registry's ``calibration_ranking`` list
#: (DESIGN.md BLOCK keys; a multilabel model's are the binary ones, averaged over labels). All three are
#: lower-is-better, so "1 = lowest" in the ranking is "1 = best" (:func:`_recommend` follows the registry).
COMPARED = registry.names("calibration_ranking", "binary")


@dataclass(frozen=True)
class CalibrationSettings:
    """The protocol's ``calibration`` section (DESIGN.md), plus the local design's fit share.

    ``n_bootstrap``: replicates for the paired change-vs-none intervals (``None``: the metric
    settings' ``n_bootstrap``).
    """

    designs: tuple[str, ...] = ("held-out",)
    methods: tuple[str, ...] = ("temperature",)
    fit_on: tuple[str, ...] | None = None
    fit_fraction: float = 1.0
    repeats: int = 20
    sample_sizes: tuple[int, ...] = (25, 50, 100, 200, 500)
    seed: int = 0
    local_fraction: float = 0.5
    n_bootstrap: int | None = None

    @classmethod
    def from_protocol(cls, calibration: Any = None, **overrides: Any) -> CalibrationSettings:
        """From a protocol's ``calibration`` (pydantic model, dict or None); non-None overrides win."""
        values = section_values(cls, calibration, overrides)
        for k in ("designs", "methods", "fit_on", "sample_sizes"):
            if values.get(k) is not None:
                values[k] = tuple(values[k])
        return replace(cls(), **values)


# ---- the data of one task, as arrays --------------------------------------------------------------
@dataclass
class _Cases:
    """Labels, logits and uncalibrated probabilities of a predictions table, row-aligned."""

    task: str
    y: np.ndarray  # binary 0/1 int, multiclass int, multilabel [N, L] int
    z: np.ndarray  # logits: [N], [N, K] or [N, L]
    p: np.ndarray  # uncalibrated probabilities, same shape as z
    site: np.ndarray  # site id per case (object)
    clusters: np.ndarray | None
    names: list[str] | None = None
    sites: list[str] = field(default_factory=list)
    # what the uncalibrated AUROC/AUPRC rank (the logits when given: sigmoid ties them above ~36.7)
    s: np.ndarray | None = None

    @classmethod
    def of(cls, table, cluster_by: str | None) -> _Cases:
        task = table.task
        frame = table.frame
        from validate.predictions import cluster_keys

        if task == "binary":
            y, z, p, s = table.y().astype(np.int64), table.logit(), table.prob(), table.score()
        elif task == "multiclass":
            y, z, p, s = table.y(), table.logits(), table.probs(), table.scores()
        else:
            y, z, p, s = table.Y().astype(np.int64), table.logits(), table.probs(), table.scores()
        clusters = None
        v = cluster_keys(frame, cluster_by)  # (site, patient): a case id is unique only within its site
        if v is not None:
            clusters = v if len(set(v)) < len(v) else None
        return cls(task, y, z, p, table.site_ids, clusters, table.names, table.sites(), s)

    def at(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y[idx], self.z[idx], self.p[idx]

    def clusters_at(self, idx: np.ndarray) -> np.ndarray | None:
        if self.clusters is None:
            return None
        c = self.clusters[idx]
        return c if len(set(c)) < len(c) else None

    def site_index(self, site: str) -> np.ndarray:
        return np.flatnonzero(self.site == site)


# ---- metrics (from the metrics engine) -----------------------------------------------------------
def _metric_functions(task: str, bins: int) -> dict[str, Callable]:
    """metric name -> f(y, P, w) with w None (point) or (r, n) replicate weights -> float or (r,): the
    registry's weighted functions of the compared metrics (multilabel: the mean over labels of the binary
    ones, as the metrics engine's macro averages)."""
    from validate.metrics.replicates import WeightedCases

    def registered(metric):
        return lambda y, P, w=None: metric.weighted(WeightedCases(y, P, bins=bins), w)

    if task in ("binary", "multiclass"):
        return {m: registered(registry.get(m, task)) for m in COMPARED}
    binary = _metric_functions("binary", bins)

    def macro(name):
        def f(Y, P, w=None):
            vals = [binary[name](Y[:, j], P[:, j], w) for j in range(Y.shape[1])]
            return float(np.mean(vals)) if w is None else np.mean(vals, axis=0)

        return f

    return {m: macro(m) for m in COMPARED}


def _point_metrics(fns: dict, y, p) -> dict:
    return {m: _finite(fns[m](y, p)) for m in COMPARED}


def _finite(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _block(
    cases: _Cases, y, p, idx, settings, smooth_intervals: bool, stratified: bool = False, uncalibrated: bool = False
) -> dict:
    """The metrics engine's BLOCK; if the engine fails on these predictions (e.g. a smoother on a step
    map's few distinct values), a reduced block with the point estimates of the compared metrics and
    the engine's message under ``error``, so one metric cannot sink the whole comparison."""
    try:
        return _engine_block(cases, y, p, idx, settings, smooth_intervals, stratified, uncalibrated)
    except ValueError as exc:
        fns = _metric_functions(cases.task, settings.bins)
        block = {"n": int(len(idx)), "error": f"metrics engine: {exc}"}
        for k in COMPARED:
            block[k] = {"estimate": _finite(fns[k](y, p)), "ci_low": None, "ci_high": None, "method": "none"}
        return block


def _engine_block(
    cases: _Cases, y, p, idx, settings, smooth_intervals: bool, stratified: bool, uncalibrated: bool = False
) -> dict:
    """``uncalibrated``: ``p`` are the table's own probabilities, so the ranking metrics rank the
    table's scores (its logits when given) instead of p, which float64 saturates to 1.0."""
    from validate.metrics import binary_block, multiclass_block, multilabel_block

    clusters = cases.clusters_at(idx)
    strata = cases.site[idx] if stratified else None
    scores = cases.s[idx] if uncalibrated and cases.s is not None else None
    if cases.task == "binary":
        return binary_block(
            y.astype(np.float64),
            p,
            settings=settings,
            clusters=clusters,
            strata=strata,
            smooth_intervals=smooth_intervals,
            scores=scores,
        )
    if cases.task == "multiclass":
        return multiclass_block(
            y,
            p,
            settings=settings,
            class_names=cases.names,
            clusters=clusters,
            strata=strata,
            smooth_intervals=smooth_intervals,
            scores=scores,
        )
    return multilabel_block(
        y.astype(np.float64),
        p,
        settings=settings,
        label_names=cases.names,
        clusters=clusters,
        strata=strata,
        smooth_intervals=smooth_intervals,
        scores=scores,
    )


def _estimate(block: dict, metric: str) -> float | None:
    e = block.get(metric)
    if isinstance(e, dict):
        return e.get("estimate")
    if block.get("macro") and isinstance(block["macro"].get(metric), dict):  # multilabel macro averages
        return block["macro"][metric].get("estimate")
    return None


def _interval(block: dict, metric: str) -> tuple[float, float] | None:
    e = block.get(metric)
    if not isinstance(e, dict) and block.get("macro"):
        e = block["macro"].get(metric)
    if isinstance(e, dict) and e.get("ci_low") is not None and e.get("ci_high") is not None:
        return float(e["ci_low"]), float(e["ci_high"])
    return None


# ---- sampling ---------------------------------------------------------------------------------
def stratified_subset(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of a random subset of ``size`` cases, stratified by label (multiclass/binary
    ``y``; multilabel: by the first label) with proportional allocation by largest remainder and at
    least one case of each label present when ``size`` allows; sorted."""
    lab = y if y.ndim == 1 else y[:, 0]
    n = lab.size
    size = int(min(max(size, 0), n))
    classes, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    exact = size * counts / n
    take = np.floor(exact).astype(int)
    if size >= classes.size:
        take = np.maximum(take, 1)
    take = np.minimum(take, counts)
    left = size - take.sum()
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while left > 0:
        c = order[i % classes.size]
        if take[c] < counts[c]:
            take[c] += 1
            left -= 1
        i += 1
    while left < 0:  # minimum-one rule overshot: remove from the largest strata
        c = int(np.argmax(take - (take > 1)))
        take[c] -= 1
        left += 1
    chosen = [rng.choice(np.flatnonzero(inverse == c), size=take[c], replace=False) for c in range(classes.size)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


# ---- fitting ------------------------------------------------------------------------------------
def _fit(method: str, task: str, y, z):
    """A fitted calibrator, or the CalibrationFitError message."""
    try:
        return get_calibrator(method, task).fit(z, y), None
    except CalibrationFitError as exc:
        return None, str(exc)


def _predict_or_none(cal, z, p):
    return p if cal is None else cal.predict_proba(z)


# ---- held-out ---------------------------------------------------------------------------------
def _held_out(
    cases: _Cases, methods, fit_on, external, cfg: CalibrationSettings, settings, n_boot: int, smooth_intervals: bool
) -> dict:
    from validate.metrics import paired_bootstrap_difference

    rng = np.random.default_rng([cfg.seed, 1])
    fit_idx, eval_sets = [], {}
    for s in fit_on:
        idx = cases.site_index(s)
        if cfg.fit_fraction < 1.0:
            chosen = stratified_subset(cases.y[idx], int(round(cfg.fit_fraction * idx.size)), rng)
            rest = np.setdiff1d(np.arange(idx.size), chosen)
            fit_idx.append(idx[chosen])
            if rest.size:
                eval_sets[s] = idx[rest]
        else:
            fit_idx.append(idx)
    fit_idx = np.concatenate(fit_idx)
    for s in cases.sites:
        if s not in fit_on:
            eval_sets[s] = cases.site_index(s)
    yf, zf, _ = cases.at(fit_idx)
    fns = _metric_functions(cases.task, settings.bins)

    out: dict = {"none": {"params": {}, "sites": {}}}
    fitted = {}
    for m in methods:
        cal, err = _fit(m, cases.task, yf, zf)
        fitted[m] = cal
        out[m] = {"params": export_params(cal) if cal is not None else None, "sites": {}}
        if err:
            out[m]["error"] = err
    n_fitted = sum(cal is not None for cal in fitted.values())
    blocks = progress.start("held-out", total=(len(eval_sets) + bool(eval_sets)) * (1 + n_fitted), unit="blocks")
    for s, idx in eval_sets.items():
        y, z, p0 = cases.at(idx)
        out["none"]["sites"][s] = _block(cases, y, p0, idx, settings, smooth_intervals, uncalibrated=True)
        blocks.advance(detail=f"none/{s}")
        for m in methods:
            cal = fitted[m]
            if cal is None:
                continue
            p = cal.predict_proba(z)
            out[m]["sites"][s] = _block(cases, y, p, idx, settings, smooth_intervals)
            blocks.advance(detail=f"{m}/{s}")
            if cases.task == "multiclass" and m in ("isotonic", "histogram"):
                out[m].setdefault("predicted_class_changed", {})[s] = predicted_class_changed(z, p)
            change = {}
            for metric in COMPARED:
                f = fns[metric]
                d = paired_bootstrap_difference(
                    lambda w, f=f, p=p, y=y: f(y, p, w),
                    lambda w, f=f, y=y, p0=p0: f(y, p0, w),
                    len(idx),
                    n_rep=n_boot,
                    clusters=cases.clusters_at(idx),
                    seed=settings.seed,
                    level=settings.ci_level,
                )
                change[metric] = {k: _clean(v) for k, v in d.items()}
            out[m].setdefault("change_vs_none", {})[s] = change
    if eval_sets:  # pooled over every evaluated case, bootstrap stratified by site (for `overall` gates)
        pooled = np.concatenate(list(eval_sets.values()))
        y, z, p0 = cases.at(pooled)
        out["none"]["overall"] = _block(
            cases, y, p0, pooled, settings, smooth_intervals, stratified=True, uncalibrated=True
        )
        blocks.advance(detail="none/overall")
        for m in methods:
            if fitted[m] is not None:
                out[m]["overall"] = _block(
                    cases, y, fitted[m].predict_proba(z), pooled, settings, smooth_intervals, stratified=True
                )
                blocks.advance(detail=f"{m}/overall")
    blocks.finish()
    rec = _recommend(
        {
            m: {s: {k: _estimate(b, k) for k in COMPARED} for s, b in out[m]["sites"].items()}
            for m in ["none", *methods]
            if out[m]["sites"]
        },
        [s for s in external if s in eval_sets] or list(eval_sets),
    )
    rec["note"] = _overlap_note(rec, out, [s for s in external if s in eval_sets] or list(eval_sets))
    evaluated = {s: ("held-out part of a fitting site" if s in fit_on else "whole site") for s in eval_sets}
    return {
        "methods": out,
        "recommendation": rec,
        "n_fit": int(fit_idx.size),
        "evaluated": evaluated,
        "fit_fraction": cfg.fit_fraction,
    }


def _clean(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def _overlap_note(rec: dict, out: dict, sites: list[str]) -> str | None:
    best, runner = rec.get("method"), rec.get("runner_up")
    notes = []
    if best and runner:
        overlap = [
            s
            for s in sites
            if s in out[best]["sites"]
            and s in out[runner]["sites"]
            and all(
                _overlaps(_interval(out[best]["sites"][s], k), _interval(out[runner]["sites"][s], k)) for k in COMPARED
            )
        ]
        if overlap and len(overlap) == len([s for s in sites if s in out[best]["sites"]]):
            notes.append(
                f"intervals of {best} and {runner} overlap on ECE, Brier and log loss at every external "
                "site: the data do not clearly separate them"
            )
    if best and best != "none":
        flat = [
            s
            for s, ch in out[best].get("change_vs_none", {}).items()
            if s in sites and ch["ece"]["ci_low"] is not None and ch["ece"]["ci_low"] <= 0 <= ch["ece"]["ci_high"]
        ]
        if flat:
            notes.append(f"{best}'s change in ECE against none has an interval including 0 at {', '.join(flat)}")
    return "; ".join(notes) or None


def _overlaps(a, b) -> bool:
    if a is None or b is None:
        return True  # without intervals, no claim of a difference
    return a[0] <= b[1] and b[0] <= a[1]


# ---- recommendation -------------------------------------------------------------------------------
def _recommend(values: dict[str, dict[str, dict[str, float | None]]], sites: list[str]) -> dict:
    """Best mean rank over ``sites``: at each site rank methods by each compared metric (1 = lowest,
    ties share the mean rank, a missing value ranks last), average the metric ranks, then the sites."""
    methods = list(values)
    per_site = {}
    for s in sites:
        ranks = []
        for metric in COMPARED:
            vals = np.array(
                [values[m].get(s, {}).get(metric) if values[m].get(s) else None for m in methods], dtype=float
            )
            # best first: the registry's direction, so 1 = best (all compared metrics are lower-is-better)
            vals = vals * (-1.0 if registry.get(metric).direction == "higher" else 1.0)
            vals = np.where(np.isnan(vals), np.inf, vals)
            ranks.append(_average_ranks(vals))
        per_site[s] = dict(zip(methods, np.mean(ranks, axis=0).tolist(), strict=True))
    if not per_site:
        return {"method": None, "criterion": "no evaluation site", "mean_rank": {}}
    mean_rank = {m: float(np.mean([per_site[s][m] for s in per_site])) for m in methods}
    order = sorted(methods, key=lambda m: (mean_rank[m], m == "none", methods.index(m)))
    return {
        "method": order[0],
        "runner_up": order[1] if len(order) > 1 else None,
        "criterion": "best mean rank over external sites of ECE, Brier score and log loss",
        "sites": list(per_site),
        "mean_rank": mean_rank,
        "rank_by_site": per_site,
    }


def _average_ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v, method="average")


# ---- repeated designs -----------------------------------------------------------------------------
def _summary(values: list[float]) -> dict:
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "q025": None, "q975": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "q025": float(np.quantile(v, 0.025)),
        "q975": float(np.quantile(v, 0.975)),
        "n": int(v.size),
    }


def _repeated(cases: _Cases, methods, site: str, fit_size: int, cfg: CalibrationSettings, fns, stream: int) -> dict:
    """``repeats`` random label-stratified splits of ``site``: fit on ``fit_size`` cases, evaluate on
    the rest; per method the summaries of each compared metric, of the change against none, and how
    often the method beat none on log loss."""
    idx = cases.site_index(site)
    rows: dict[str, dict[str, list]] = {m: {k: [] for k in COMPARED} for m in ["none", *methods]}
    change: dict[str, dict[str, list]] = {m: {k: [] for k in COMPARED} for m in methods}
    fallbacks: dict[str, dict] = {}
    for r in range(cfg.repeats):
        rng = np.random.default_rng([cfg.seed, stream, r])
        fit_pos = stratified_subset(cases.y[idx], fit_size, rng)
        ev = idx[np.setdiff1d(np.arange(idx.size), fit_pos)]
        yf, zf, _ = cases.at(idx[fit_pos])
        y, z, p0 = cases.at(ev)
        base = _point_metrics(fns, y, p0)
        for k in COMPARED:
            rows["none"][k].append(base[k])
        for m in methods:
            cal, err = _fit(m, cases.task, yf, zf)
            if err:
                fb = fallbacks.setdefault(m, {"count": 0, "first_reason": err})
                fb["count"] += 1
            vals = _point_metrics(fns, y, _predict_or_none(cal, z, p0))
            for k in COMPARED:
                rows[m][k].append(vals[k])
                if vals[k] is not None and base[k] is not None:
                    change[m][k].append(vals[k] - base[k])
    res = {"n_fit": int(fit_size), "n_eval": int(idx.size - fit_size), "repeats": cfg.repeats, "methods": {}}
    for m in ["none", *methods]:
        entry = {k: _summary(rows[m][k]) for k in COMPARED}
        if m != "none":
            entry["change_vs_none"] = {k: _summary(change[m][k]) for k in COMPARED}
            ll = np.array(change[m]["log_loss"], dtype=float)
            entry["beats_none_log_loss"] = float(np.mean(ll < 0)) if ll.size else None
            if m in fallbacks:
                entry["fallbacks"] = fallbacks[m]
        res["methods"][m] = entry
    return res


def _local(cases, methods, external, cfg, fns) -> dict:
    sites = {}
    for i, s in enumerate(external):
        n = cases.site_index(s).size
        fit_size = int(round(cfg.local_fraction * n))
        if fit_size < MIN_FIT_CASES or n - fit_size < MIN_EVAL_CASES:
            sites[s] = {
                "skipped": f"{n} cases: too few to fit on {cfg.local_fraction:.0%} "
                f"(>= {MIN_FIT_CASES}) and evaluate on the rest (>= {MIN_EVAL_CASES})"
            }
            continue
        sites[s] = _repeated(cases, methods, s, fit_size, cfg, fns, stream=100 + i)
    rec = _recommend(
        {
            m: {s: {k: v["methods"][m][k]["mean"] for k in COMPARED} for s, v in sites.items() if "methods" in v}
            for m in ["none", *methods]
        },
        [s for s in sites if "methods" in sites[s]],
    )
    return {"fit_fraction": cfg.local_fraction, "repeats": cfg.repeats, "sites": sites, "recommendation": rec}


def _sample_size(cases, methods, external, cfg, fns) -> dict:
    sites = {}
    for i, s in enumerate(external):
        n = cases.site_index(s).size
        sizes, skipped = {}, {}
        for j, m in enumerate(cfg.sample_sizes):
            if m < MIN_FIT_CASES or n - m < MIN_EVAL_CASES:
                skipped[str(m)] = (
                    f"site has {n} cases: fitting on {m} leaves {n - m} to evaluate (< {MIN_EVAL_CASES})"
                    if m >= MIN_FIT_CASES
                    else f"fewer than {MIN_FIT_CASES} fitting cases"
                )
                continue
            sizes[str(m)] = _repeated(cases, methods, s, m, cfg, fns, stream=1000 + 100 * i + j)
        sites[s] = {"n": int(n), "sizes": sizes}
        if skipped:
            sites[s]["skipped"] = skipped
    return {"sample_sizes": list(cfg.sample_sizes), "repeats": cfg.repeats, "sites": sites}


def _transfer(cases, methods, cfg, fns) -> dict:
    matrix: dict = {m: {k: {} for k in COMPARED} for m in ["none", *methods]}
    errors: dict = {}
    for i in cases.sites:
        fi = cases.site_index(i)
        yf, zf, _ = cases.at(fi)
        fitted = {}
        for m in methods:
            fitted[m], err = _fit(m, cases.task, yf, zf)
            if err:
                errors.setdefault(m, {})[i] = err
        for j in cases.sites:
            if j == i:
                continue
            ej = cases.site_index(j)
            y, z, p0 = cases.at(ej)
            base = _point_metrics(fns, y, p0)
            for k in COMPARED:
                matrix["none"][k].setdefault(i, {})[j] = base[k]
            for m in methods:
                vals = (
                    _point_metrics(fns, y, fitted[m].predict_proba(z))
                    if fitted[m] is not None
                    else dict.fromkeys(COMPARED)
                )
                for k in COMPARED:
                    matrix[m][k].setdefault(i, {})[j] = vals[k]
    out = {
        "layout": "methods[method][metric][fit_site][eval_site]; the diagonal is the local design",
        "sites": list(cases.sites),
        "methods": matrix,
    }
    if errors:
        out["errors"] = errors
    return out


# ---- entry point ------------------------------------------------------------------------------
def compare_calibration(
    table,
    *,
    task: str | None = None,
    protocol: Any = None,
    methods: Sequence[str] | None = None,
    designs: Sequence[str] | None = None,
    fit_on: Sequence[str] | None = None,
    metric_settings: Any = None,
    calibration: Any = None,
    external_sites: Sequence[str] | None = None,
    n_bootstrap: int | None = None,
    smooth_intervals: bool = False,
    settings: Any = None,
) -> dict:
    """Compare calibration methods across the sites of a predictions table; the Calibration JSON.

    ``table``: a :class:`validate.predictions.PredictionsTable`. ``protocol`` (optional, a loaded
    :class:`validate.protocol.Protocol`) supplies the defaults: its ``metrics`` (→ ``metric_settings``),
    ``calibration`` section (→ ``calibration``: designs, methods, fit_on, fit_fraction, repeats,
    sample_sizes, seed), fit sites (``calibration_fit_sites``) and external sites (role ``external``).
    Explicit arguments win over the protocol. ``metric_settings``: a
    :class:`validate.metrics.MetricSettings` (or the protocol's metrics section); ``calibration``: a
    :class:`CalibrationSettings` or the protocol's calibration section; ``n_bootstrap`` overrides the
    replicates of the paired change intervals and of the BLOCKs (keep it small for quick runs).
    ``settings`` is an alias of ``metric_settings``. ``smooth_intervals``: bootstrap intervals for the
    lowess/loess metrics (eavg, e50, e90, emax, ici) of every method x site BLOCK; off by default
    because they cost ~10 s per BLOCK at 1,000 replicates (their point estimates are always there).
    ``external_sites``: where the recommendation is judged and the local / sample-size designs run
    (default: the protocol's external sites present in the table, else every site not fitted on).

    Raises :class:`InputError` for an unknown method, a method not valid for the task, an unknown
    site, an unknown design or no site left to evaluate.
    """
    if task is not None and task != table.task:
        raise InputError(f"the predictions hold a {table.task} task, not {task}", field="task")
    task = table.task
    settings = _metric_settings(metric_settings if metric_settings is not None else settings, protocol, n_bootstrap)
    cfg = _calibration_settings(calibration, protocol, methods=methods, designs=designs, fit_on=fit_on)
    n_boot = settings.n_bootstrap if cfg.n_bootstrap is None else cfg.n_bootstrap
    _check_designs(cfg.designs)
    methods_list = _methods_to_compare(cfg.methods, task)
    sites = table.sites()
    fit_on_list = _fit_sites(cfg.fit_on, sites)
    cases = _Cases.of(table, settings.cluster_by)
    external = _external_sites(external_sites, protocol, sites, fit_on_list)

    designs_run = ["held-out"] + [d for d in cfg.designs if d != "held-out"]
    with progress.phase("calibration", total=len(designs_run), unit="designs") as ph:
        ph.advance(0, detail="held-out")
        held = _held_out(cases, methods_list, fit_on_list, external, cfg, settings, n_boot, smooth_intervals)
        if not any(held["methods"]["none"]["sites"].values()):
            raise InputError(
                "no cases left to evaluate: every site is a fitting site and fit_fraction is 1",
                field="calibration.fit_on",
                expected="at least one site not fitted on, or fit_fraction < 1",
            )
        ph.advance()
        extra = _other_designs(cases, methods_list, external, cfg, _metric_functions(task, settings.bins), ph)
    result = {
        "task": task,
        "design": "held-out",
        "fit_on": fit_on_list,
        "methods": held["methods"],
        "recommended": held["recommendation"]["method"],
        "recommendation": held["recommendation"],
        "recommendation_note": held["recommendation"].get("note"),
        "held_out": {"n_fit": held["n_fit"], "fit_fraction": held["fit_fraction"], "evaluated": held["evaluated"]},
        "external_sites": external,
        "n_bootstrap": n_boot,
        "ci_level": settings.ci_level,
        "seed": cfg.seed,
        "designs_run": designs_run,
    }
    if cases.names:
        result["classes" if task == "multiclass" else "labels"] = list(cases.names)
    if extra:
        result["designs"] = extra
    return result


def _metric_settings(given: Any, protocol: Any, n_bootstrap: int | None) -> Any:
    """The metric settings: ``given`` as is (a MetricSettings) or read from a protocol's metrics
    section (``given``, else the protocol's); ``n_bootstrap`` overrides the replicates."""
    from validate.metrics import MetricSettings

    if isinstance(given, MetricSettings):
        settings = given
    else:
        settings = MetricSettings.from_protocol(given if given is not None else getattr(protocol, "metrics", None))
    if n_bootstrap is not None:
        settings = replace(settings, n_bootstrap=int(n_bootstrap))
    return settings


def _calibration_settings(
    calibration: Any,
    protocol: Any,
    *,
    methods: Sequence[str] | None,
    designs: Sequence[str] | None,
    fit_on: Sequence[str] | None,
) -> CalibrationSettings:
    """The calibration settings (``calibration``, else the protocol's section), with explicit designs,
    methods and fit sites winning; without fit sites, the protocol's calibration fit sites."""
    if isinstance(calibration, CalibrationSettings):
        cfg = calibration
    else:
        cfg = CalibrationSettings.from_protocol(
            calibration if calibration is not None else getattr(protocol, "calibration", None)
        )
    cfg = replace(
        cfg,
        designs=tuple(designs) if designs is not None else cfg.designs,
        methods=tuple(methods) if methods is not None else cfg.methods,
        fit_on=tuple(fit_on) if fit_on is not None else cfg.fit_on,
    )
    if cfg.fit_on is None and protocol is not None:
        cfg = replace(cfg, fit_on=tuple(protocol.calibration_fit_sites))
    return cfg


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def _check_designs(designs: Sequence[str]) -> None:
    """Refuse a design that is not one of :data:`DESIGNS`."""
    for d in designs:
        if d not in DESIGNS:
            raise InputError(
                f"unknown calibration design {d!r}" + _did_you_mean(d, DESIGNS),
                field="calibration.designs",
                expected=" | ".join(DESIGNS),
            )


def _methods_to_compare(methods: Sequence[str], task: str) -> list[str]:
    """The methods to fit, each checked for the task, once, in the order given ("none" is always
    compared and not listed)."""
    methods_list: list[str] = []
    for m in methods:
        if m == "none":
            continue  # always included
        check_method(m, task)
        if m not in methods_list:
            methods_list.append(m)
    return methods_list


def _fit_sites(fit_on: Sequence[str] | None, sites: list[str]) -> list[str]:
    """The sites to fit on, each present in the predictions, once, in the order given."""
    if not fit_on:
        raise InputError(
            "no site to fit calibrators on",
            field="calibration.fit_on",
            expected="one or more site ids (--fit-on SITE[,SITE])",
        )
    for s in fit_on:
        if s not in sites:
            raise InputError(
                f"fit-on site {s!r} is not in the predictions" + _did_you_mean(str(s), sites),
                field="fit_on",
                expected=f"one of {', '.join(sites)}",
            )
    return list(dict.fromkeys(fit_on))


def _external_sites(
    external_sites: Sequence[str] | None, protocol: Any, sites: list[str], fit_on: list[str]
) -> list[str]:
    """Where the recommendation is judged: the given sites present in the predictions; by default the
    protocol's external sites not fitted on, else every site not fitted on."""
    if external_sites is not None:
        return [s for s in external_sites if s in sites]
    ext = [s.id for s in getattr(protocol, "sites", []) if getattr(s, "role", None) == "external"]
    return [s for s in ext if s in sites and s not in fit_on] or [s for s in sites if s not in fit_on]


def _other_designs(
    cases: _Cases, methods: list[str], external: list[str], cfg: CalibrationSettings, fns: dict, ph: progress.Phase
) -> dict:
    """The results of the designs besides held-out that the settings ask for, by JSON key; ``ph``
    advances once per design."""
    runs = {
        "local": lambda: _local(cases, methods, external, cfg, fns),
        "transfer": lambda: _transfer(cases, methods, cfg, fns),
        "sample-size": lambda: _sample_size(cases, methods, external, cfg, fns),
    }
    extra = {}
    for design, run in runs.items():
        if design in cfg.designs:
            ph.advance(0, detail=design)
            extra[design.replace("-", "_")] = run()
            ph.advance()
    return extra


__all__ = ["compare_calibration", "CalibrationSettings", "DESIGNS", "stratified_subset"]
