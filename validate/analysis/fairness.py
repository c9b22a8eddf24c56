"""Group fairness measures with patient-clustered paired-bootstrap intervals (``fairness.json``).

For each declared subgroup (an *attribute*: a column, a banded column or an intersection), pooled over
sites (``overall``, the bootstrap stratified by site) and at each site, and at each operating threshold
(the protocol's ``metrics.thresholds`` and the target-sensitivity threshold of that block in
``metrics.json``, carried from the development site when there is one), a case is *selected* when
``p >= t`` (as every operating point of validate):

- per group g: ``tpr`` = TP/P (sensitivity), ``fpr`` = FP/N (1 − specificity), ``ppv`` = TP/(TP + FP)
  and ``selection_rate`` = (TP + FP)/n; beside each, the gap to the reference group r,
  ``<rate>_gap`` = rate(g) − rate(r), and ``<rate>_ratio`` = rate(g) / rate(r).
- summary over the groups judged (``included``: every group not marked insufficient whose rates are
  defined), with fairlearn's definitions (``fairlearn.metrics``, method ``between_groups``;
  Hardt, Price & Srebro 2016 for equalised odds; Matos, Van Calster, Collins et al. 2025 for their
  use in clinical AI):

  - ``tpr_difference``, ``fpr_difference``, ``ppv_difference``: max − min of the rate over groups;
  - ``demographic_parity_difference``: max − min of the selection rate; ``demographic_parity_ratio``:
    min / max of the selection rate;
  - ``equalized_odds_difference``: max(TPR difference, FPR difference);
    ``equalized_odds_ratio``: min(TPR min/max, FPR min/max).

- net benefit per group at the protocol's ``decision.thresholds`` (when declared): NB, treat-all NB
  at the group's own prevalence and NB − treat all (:func:`group_net_benefit`), and the spread of NB
  over the groups judged, ``net_benefit_difference``;
- calibration within groups: per group the calibration-in-the-large α (logit P(y=1) = α + logit(p))
  and the calibration slope β (logit P(y=1) = a + β logit(p)), maximum likelihood with their Wald
  intervals (:func:`validate.metrics.calibration.calibration_intercept` / ``calibration_slope``, as
  in metrics.json); summary ``calibration_in_the_large_range`` and ``calibration_slope_range`` = max −
  min over the groups judged.

Intervals: bootstrap percentile intervals from the same replicate weights as every other metric
(:func:`validate.metrics.iter_bootstrap_weights` with the protocol's seed, patients resampled as
clusters, pooled blocks stratified by site). Every group's rate, gap and summary is evaluated on the
*same* replicate (a paired bootstrap), so a gap's interval accounts for the correlation of its two
terms. A replicate in which a group's rate is undefined (e.g. no event of the group drawn) is left
out of that interval; ``replicates`` says how many were used. A summary over groups (a maximum of
absolute differences, or min/max) leans upward in resamples, so the percentile interval of its own
replicates can exclude its estimate; its interval is built from the pairs instead
(:func:`spread`, method ``"bootstrap, pairwise"``): each pair's signed difference (of log rates for
a ratio) gets its percentile interval, read as an interval of the absolute difference, and the
summary's interval runs from the largest lower to the largest upper bound over pairs (it holds the
estimate; the upper bound is conservative). The calibration ranges'
replicates refit both logistic models per group on the replicate's weights (Newton–Raphson to
|step| < 1e-10; a replicate whose fit does not converge is left out).

Small groups are kept and shown with ``insufficient`` (the metrics' rule: fewer than ``min_cases``
cases, or ``min_events`` events or non-events) and are left out of the summaries, listed under
``excluded_insufficient``: a maximum over groups would otherwise be the noise of the smallest group.
Reference group: ``fairness.reference`` of the protocol, else the largest group pooled over sites that
is not ``missing`` (ties: the first in group order); the same reference at every site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from validate.errors import InputError
from validate.groups import MISSING, group_sort_key

RATES = ("tpr", "fpr", "ppv", "selection_rate")
SUMMARY_AT_THRESHOLD = (
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "tpr_difference",
    "fpr_difference",
    "ppv_difference",
)
CALIBRATION_SUMMARY = ("calibration_in_the_large_range", "calibration_slope_range")
#: Every measure a gate at scope ``each_attribute`` may name.
GATEABLE = SUMMARY_AT_THRESHOLD + CALIBRATION_SUMMARY
DEFINITIONS = {
    "tpr": "TP / P (sensitivity) of the group; selected = p >= threshold",
    "fpr": "FP / N (1 - specificity) of the group",
    "ppv": "TP / (TP + FP) of the group",
    "selection_rate": "(TP + FP) / n: share of the group selected",
    "<rate>_gap": "rate(group) - rate(reference group)",
    "<rate>_ratio": "rate(group) / rate(reference group)",
    "equalized_odds_difference": "max(max-min TPR, max-min FPR) over the groups judged (fairlearn)",
    "equalized_odds_ratio": "min(min/max TPR, min/max FPR) over the groups judged (fairlearn)",
    "demographic_parity_difference": "max - min selection rate over the groups judged (fairlearn)",
    "demographic_parity_ratio": "min / max selection rate over the groups judged (fairlearn)",
    "tpr_difference": "max - min TPR over the groups judged",
    "fpr_difference": "max - min FPR over the groups judged",
    "ppv_difference": "max - min PPV over the groups judged",
    "calibration_in_the_large_range": "max - min calibration intercept (slope fixed at 1) over the groups judged",
    "calibration_slope_range": "max - min calibration slope over the groups judged",
    "interval": "bootstrap percentile, patient-clustered, paired (same replicates for every group); "
    "pooled blocks stratified by site",
}
NEWTON_TOL = 1e-10
NEWTON_MAX_ITER = 100
CHUNK = 100


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ---- rates and summaries on replicate weights ------------------------------------------------------


def group_rates(w: np.ndarray, G: np.ndarray, y: np.ndarray, selected: np.ndarray) -> dict[str, np.ndarray]:
    """TPR, FPR, PPV and selection rate per group, shape (k, g), for replicate weights ``w`` (k, n),
    group indicators ``G`` (n, g), labels ``y`` (n,) 0/1 and ``selected`` (n,) 0/1. Undefined rates
    (a zero denominator) are NaN."""
    n = w @ G
    pos = w @ (G * y[:, None])
    tp = w @ (G * (y * selected)[:, None])
    fp = w @ (G * ((1.0 - y) * selected)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "tpr": tp / pos,
            "fpr": fp / (n - pos),
            "ppv": tp / (tp + fp),
            "selection_rate": (tp + fp) / n,
        }


def _abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """The interval of |d| from a signed interval [lo, hi] of d: 0 when it covers 0, else the nearer
    bound; up to the farther bound (as the ``subgroup_gap`` gates read a gap)."""
    lower = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return lower, max(abs(lo), abs(hi))


def spread(point: np.ndarray, reps: np.ndarray, level: float, *, log: bool = False) -> tuple[float, float, float, int]:
    """The spread over groups max_ij |v_i − v_j| (= max − min) of per-group values ``point`` (g,), with
    an interval from the paired replicates ``reps`` (R, g): for every pair, the percentile interval of the
    signed difference d_ij (its finite replicates), read as an interval of |d_ij| (:func:`_abs_interval`);
    the spread's interval runs from the largest lower to the largest upper bound over pairs. With
    ``log``, the differences are of log values (for ratios: the caller maps s to exp(−s)).

    Why not the percentile interval of the replicates of max − min: a maximum of absolute differences
    leans upward in resamples (as binned ECE does), and with groups alike its percentile interval
    excludes its own estimate. The upper bound is the largest difference any pair's interval allows,
    so P(upper ≥ true spread) is at least the pair level for the pair attaining it (conservative for a
    ``max`` gate on ``ci_high``); the lower bound is the largest gap some pair shows as non-zero (per
    pair, not simultaneous). Returns (estimate, lower, upper, fewest finite replicates of a pair); NaN
    estimate when a value is undefined or fewer than two groups are given, NaN bounds without replicates."""
    from validate.metrics import percentile_interval

    nan = float("nan")
    g = point.size
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log(point) if log else point
        r = np.log(reps) if log else reps
    if g < 2 or not np.all(np.isfinite(v)):
        return nan, nan, nan, 0
    est = float(np.max(v) - np.min(v))
    lows, highs, used = [], [], []
    for i in range(g):
        for j in range(i + 1, g):
            with np.errstate(invalid="ignore"):
                d = r[:, i] - r[:, j]
            d = d[np.isfinite(d)]
            used.append(int(d.size))
            if d.size == 0:
                return est, nan, nan, 0
            lo, hi = percentile_interval(d, level)
            lower, upper = _abs_interval(float(lo), float(hi))
            lows.append(lower)
            highs.append(upper)
    return est, max(lows), max(highs), min(used)


def _summary_entry(est: float, lo: float, hi: float, used: int, method: str = "bootstrap, pairwise") -> dict:
    out: dict[str, Any] = {"estimate": _num(est), "ci_low": None, "ci_high": None, "method": method}
    if out["estimate"] is not None and used:
        out.update(ci_low=_num(lo), ci_high=_num(hi), replicates=used)
    return out


def _ratio_entry(v: np.ndarray, reps: np.ndarray, level: float) -> tuple[float, float, float, int]:
    """min / max of the rates ``v`` (exactly fairlearn's ratio), its interval exp(−bounds) of the spread
    of the log rates (turned over); a ratio over a zero rate is 0 with no interval."""
    nan = float("nan")
    if v.size < 2 or not np.all(np.isfinite(v)) or v.max() <= 0:
        return nan, nan, nan, 0
    est = float(v.min() / v.max())
    s_est, s_lo, s_hi, used = spread(v, reps, level, log=True)
    if not math.isfinite(s_est):
        return est, nan, nan, 0
    return est, math.exp(-s_hi), math.exp(-s_lo), used


def threshold_summaries(point: Mapping[str, np.ndarray], reps: Mapping[str, np.ndarray], level: float) -> dict:
    """The summary entries at one threshold from the judged groups' rates ``point`` (g,) and their
    replicates ``reps`` (R, g) (module docstring; intervals by :func:`spread`). Equalised odds: the
    larger TPR/FPR difference (bounds: the larger of each), the smaller TPR/FPR ratio (bounds: the
    smaller of each)."""
    diff = {r: spread(point[r], reps[r], level) for r in RATES}
    ratio = {r: _ratio_entry(point[r], reps[r], level) for r in ("tpr", "fpr", "selection_rate")}
    t, f = diff["tpr"], diff["fpr"]
    eod = (max(t[0], f[0]), max(t[1], f[1]), max(t[2], f[2]), min(t[3], f[3]))
    tr, fr = ratio["tpr"], ratio["fpr"]
    eor = (min(tr[0], fr[0]), min(tr[1], fr[1]), min(tr[2], fr[2]), min(tr[3], fr[3]))
    return {
        "equalized_odds_difference": _summary_entry(*eod),
        "equalized_odds_ratio": _summary_entry(*eor),
        "demographic_parity_difference": _summary_entry(*diff["selection_rate"]),
        "demographic_parity_ratio": _summary_entry(*ratio["selection_rate"]),
        "tpr_difference": _summary_entry(*t),
        "fpr_difference": _summary_entry(*f),
        "ppv_difference": _summary_entry(*diff["ppv"]),
    }


def _expit(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)


def _loglik(w: np.ndarray, y: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Weighted logistic log-likelihood per row: Σ w (y η − log(1 + e^η)), stable for large |η|."""
    return (w * (y[None, :] * eta - np.logaddexp(0.0, eta))).sum(axis=1)


def _halved(w, y, eta_of, theta: np.ndarray, step: np.ndarray) -> np.ndarray:
    """``step`` halved, row by row, until the log-likelihood does not decrease (at most 60 halvings):
    Newton–Raphson for the logistic model is not globally convergent (a far start oscillates)."""
    base = _loglik(w, y, eta_of(theta))
    step = step.copy()
    for _ in range(60):
        worse = _loglik(w, y, eta_of(theta + step)) < base - 1e-12 * np.abs(base)
        if not worse.any():
            break
        step[worse] *= 0.5
    return step


def _newton(w, y, eta_of, start: np.ndarray, newton_step) -> tuple[np.ndarray, np.ndarray]:
    """Rows of weights ``w`` (k, n): maximum-likelihood parameters (k, d) of a logistic model with linear
    predictor ``eta_of(theta)`` by Newton–Raphson with step halving, from ``start``, to a step below
    1e-10; and which rows converged. Rows without events or non-events are not fitted."""
    k = w.shape[0]
    events, total = w @ y, w.sum(axis=1)
    theta = np.tile(start, (k, 1))
    active = np.flatnonzero((events > 0) & (events < total))
    done = np.zeros(k, dtype=bool)
    for _ in range(NEWTON_MAX_ITER):
        if active.size == 0:
            break
        wa, th = w[active], theta[active]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            step = newton_step(wa, th)
            ok = np.isfinite(step).all(axis=1)
            step[~ok] = 0.0
            step = _halved(wa, y, eta_of, th, step)
        theta[active] = th + step
        norm = np.sqrt((step**2).sum(axis=1))
        converged = ok & (norm < NEWTON_TOL)
        done[active[converged]] = True
        active = active[ok & ~converged]  # a non-finite step (singular information) stops the row
    return theta, done


def weighted_intercepts(y: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Calibration-in-the-large α per row of weights ``w`` (k, n): maximum likelihood of logit P(y=1) =
    α + z (offset ``z`` = logit(p)), i.e. the root of Σ w (y − σ(α + z)) = 0, by Newton–Raphson with
    step halving to |step| < 1e-10. NaN without events or non-events, or without convergence."""

    def eta_of(th):
        return th[:, :1] + z[None, :]

    def newton_step(wa, th):
        mu = _expit(eta_of(th))
        grad = (wa * (y[None, :] - mu)).sum(axis=1)
        info = (wa * mu * (1.0 - mu)).sum(axis=1)
        return (grad / info)[:, None]

    theta, done = _newton(w, y, eta_of, np.array([0.0]), newton_step)
    return np.where(done, theta[:, 0], np.nan)


def weighted_slopes(y: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Calibration slope β per row of weights ``w`` (k, n) of the logistic fit logit P(y=1) = a + β z,
    by Newton–Raphson (IRLS) with step halving from (0, 1) to a step below 1e-10. NaN without events or
    non-events, for a singular information (constant z) or without convergence (perfect separation)."""

    def eta_of(th):
        return th[:, :1] + th[:, 1:] * z[None, :]

    def newton_step(wa, th):
        mu = _expit(eta_of(th))
        r, v = wa * (y[None, :] - mu), wa * mu * (1.0 - mu)
        g0, g1 = r.sum(axis=1), r @ z
        h00, h01, h11 = v.sum(axis=1), v @ z, v @ (z * z)
        det = h00 * h11 - h01 * h01
        return np.stack([(h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det], axis=1)

    theta, done = _newton(w, y, eta_of, np.array([0.0, 1.0]), newton_step)
    return np.where(done, theta[:, 1], np.nan)


# ---- one level (pooled or one site) ----------------------------------------------------------------


class _Level:
    """The cases of one level: labels, probabilities, logits and the group labels of each attribute."""

    def __init__(self, y, p, z, columns: Mapping[str, np.ndarray], settings, clusters=None, strata=None):
        self.y = np.asarray(y, dtype=np.float64)
        self.p = np.asarray(p, dtype=np.float64)
        self.z = np.asarray(z, dtype=np.float64)
        self.columns = {a: np.asarray(c).astype(str) for a, c in columns.items()}
        self.settings = settings
        self.clusters, self.strata = clusters, strata
        self.n = self.y.size

    def groups(self, attr: str) -> list[str]:
        return sorted(set(self.columns[attr]), key=group_sort_key)

    def indicator(self, attr: str, groups: Sequence[str]) -> np.ndarray:
        col = self.columns[attr]
        return np.column_stack([col == g for g in groups]).astype(np.float64) if groups else np.zeros((self.n, 0))

    def weights(self):
        """Replicate weight chunks (k, n) of the shared clustered, stratified bootstrap."""
        from validate.metrics import iter_bootstrap_weights
        from validate.metrics.bootstrap import replicate_chunk

        s = self.settings
        if s.n_bootstrap <= 0 or self.n == 0:
            return iter(())
        return (
            w
            for _, w in iter_bootstrap_weights(
                s.n_bootstrap,
                self.n,
                clusters=self.clusters,
                strata=self.strata,
                seed=s.seed,
                chunk=replicate_chunk(self.n, CHUNK),
            )
        )


def _group_info(level: _Level, attr: str, groups: Sequence[str]) -> dict[str, dict]:
    """``{group: {"n", "n_events", "insufficient"[, "reason"]}}`` by the metrics' insufficiency rule."""
    from validate.metrics import insufficiency

    col = level.columns[attr]
    out = {}
    for g in groups:
        m = col == g
        n, ev = int(m.sum()), int(level.y[m].sum())
        why = insufficiency(n, {"events": ev, "non-events": n - ev}, level.settings) if n else "no cases"
        info: dict[str, Any] = {"n": n, "n_events": ev, "insufficient": why is not None}
        if why:
            info["reason"] = why
        out[g] = info
    return out


def _entry(est, reps: list, level: float, method: str = "bootstrap") -> dict:
    """An entry ``{"estimate", "ci_low", "ci_high", "method", "replicates"}``: the percentile interval
    of the finite replicates (none when the estimate is undefined or no replicate is finite)."""
    from validate.metrics import percentile_interval

    out: dict[str, Any] = {"estimate": _num(est), "ci_low": None, "ci_high": None, "method": method}
    if out["estimate"] is None or not reps:
        return out
    d = np.concatenate(reps)
    d = d[np.isfinite(d)]
    out["replicates"] = int(d.size)
    if d.size:
        lo, hi = percentile_interval(d, level)
        out.update(ci_low=_num(lo), ci_high=_num(hi))
    return out


def _threshold_values(rates: Mapping[str, np.ndarray], ref: int | None) -> dict[str, np.ndarray]:
    """Every per-group quantity (k, g) of one threshold from the per-group ``rates``: keys ``"<rate>"``,
    ``"<rate>_gap"`` and ``"<rate>_ratio"`` (vs column ``ref``)."""
    out: dict[str, np.ndarray] = {}
    for r, v in rates.items():
        out[r] = v
        if ref is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{r}_gap"] = v - v[:, ref : ref + 1]
                out[f"{r}_ratio"] = v / v[:, ref : ref + 1]
    return out


def _threshold_block(level: _Level, attr: str, t: Mapping, plan: Mapping) -> dict:
    """One threshold of one attribute: per-group entries and the summaries, with intervals."""
    groups, ref, included = plan["groups"], plan["ref"], plan["included"]
    G = plan["G"]
    selected = (level.p >= float(t["threshold"])).astype(np.float64)
    point = _threshold_values(group_rates(np.ones((1, level.n)), G, level.y, selected), ref)
    reps: dict[str, list] = {k: [] for k in point}
    for w in level.weights():
        for k, v in _threshold_values(group_rates(w, G, level.y, selected), ref).items():
            reps[k].append(v)
    ci = level.settings.ci_level
    per_group = {}
    for j, g in enumerate(groups):
        per_group[g] = {k: _entry(point[k][0, j], [r[:, j] for r in reps[k]], ci) for k in point}
    width = len(groups)
    rep_rates = {r: np.concatenate(reps[r]) if reps[r] else np.zeros((0, width)) for r in RATES}
    summary = threshold_summaries(
        {r: point[r][0, included] for r in RATES}, {r: rep_rates[r][:, included] for r in RATES}, ci
    )
    return {**dict(t), "groups": per_group, "summary": summary}


NET_BENEFIT = ("net_benefit", "net_benefit_treat_all", "net_benefit_vs_treat_all")


def group_net_benefit(w: np.ndarray, G: np.ndarray, y: np.ndarray, treated: np.ndarray, t: float) -> dict:
    """Per group (k, g), at decision threshold ``t`` (treated = p >= t): net benefit NB = TP/n − FP/n ·
    t/(1−t), treat-all NB_all = π − (1 − π) · t/(1−t) at the group's own prevalence π, and NB − NB_all
    (Vickers & Elkin 2006; :mod:`validate.metrics.net_benefit`)."""
    from validate.metrics.net_benefit import net_benefit, treat_all

    n = w @ G
    events = w @ (G * y[:, None])
    tp = w @ (G * (y * treated)[:, None])
    fp = w @ (G * ((1.0 - y) * treated)[:, None])
    nb, nb_all = net_benefit(tp, fp, n, t), treat_all(events, n, t)
    return {"net_benefit": nb, "net_benefit_treat_all": nb_all, "net_benefit_vs_treat_all": nb - nb_all}


def _decision_block(level: _Level, t: float, plan: Mapping) -> dict:
    """Net benefit per group at one decision threshold, with paired bootstrap intervals, and the spread
    of NB over the groups judged (``net_benefit_difference``, :func:`spread`). Each group's NB is at its
    own prevalence: what the model is worth to that group."""
    groups, included, G = plan["groups"], plan["included"], plan["G"]
    treated = (level.p >= t).astype(np.float64)
    point = group_net_benefit(np.ones((1, level.n)), G, level.y, treated, t)
    reps: dict[str, list] = {k: [] for k in point}
    for w in level.weights():
        for k, v in group_net_benefit(w, G, level.y, treated, t).items():
            reps[k].append(v)
    ci = level.settings.ci_level
    per_group = {
        g: {k: _entry(point[k][0, j], [r[:, j] for r in reps[k]], ci) for k in point} for j, g in enumerate(groups)
    }
    rep_nb = np.concatenate(reps["net_benefit"]) if reps["net_benefit"] else np.zeros((0, len(groups)))
    summary = {
        "net_benefit_difference": _summary_entry(*spread(point["net_benefit"][0, included], rep_nb[:, included], ci))
    }
    return {"threshold": float(t), "groups": per_group, "summary": summary}


def _calibration_block(level: _Level, attr: str, plan: Mapping) -> dict:
    """Calibration within groups: per group α and β with Wald intervals; ranges over the groups judged
    with bootstrap intervals (each group refitted on every replicate's weights)."""
    from validate.metrics.calibration import calibration_intercept, calibration_slope

    groups, included, ci = plan["groups"], plan["included"], level.settings.ci_level
    col = level.columns[attr]
    per_group: dict[str, dict] = {}
    points: dict[str, list[float]] = {"calibration_in_the_large": [], "calibration_slope": []}
    for g in groups:
        m = col == g
        a = calibration_intercept(level.y[m], logits=level.z[m], level=ci)
        b = calibration_slope(level.y[m], logits=level.z[m], level=ci)
        b_est = b["estimate"] if b.get("converged", True) else float("nan")
        per_group[g] = {
            "calibration_in_the_large": _wald_entry(a["estimate"], a["ci_low"], a["ci_high"]),
            "calibration_slope": _wald_entry(b_est, b["ci_low"], b["ci_high"]),
        }
        points["calibration_in_the_large"].append(a["estimate"])
        points["calibration_slope"].append(b_est)
    masks = [col == groups[j] for j in included]
    reps: dict[str, list] = {"calibration_in_the_large_range": [], "calibration_slope_range": []}
    for w in level.weights():
        if masks:
            reps["calibration_in_the_large_range"].append(
                np.column_stack([weighted_intercepts(level.y[m], level.z[m], w[:, m]) for m in masks])
            )
            reps["calibration_slope_range"].append(
                np.column_stack([weighted_slopes(level.y[m], level.z[m], w[:, m]) for m in masks])
            )
    summary = {}
    for name, key in (
        ("calibration_in_the_large_range", "calibration_in_the_large"),
        ("calibration_slope_range", "calibration_slope"),
    ):
        vals = np.asarray([points[key][j] for j in included], dtype=np.float64)
        rep = np.concatenate(reps[name]) if reps[name] else np.zeros((0, vals.size))
        summary[name] = _summary_entry(*spread(vals, rep, ci))
    return {"groups": per_group, "summary": summary}


def _wald_entry(est, lo, hi) -> dict:
    e = _num(est)
    return {
        "estimate": e,
        "ci_low": _num(lo) if e is not None else None,
        "ci_high": _num(hi) if e is not None else None,
        "method": "wald",
    }


def _attribute_plan(level: _Level, attr: str, reference: str | None) -> dict:
    """The groups of ``attr`` at this level (group order), their counts, the reference's column and the
    columns judged by the summaries (groups not insufficient; none when fewer than two)."""
    groups = level.groups(attr)
    info = _group_info(level, attr, groups)
    ref = groups.index(reference) if reference in groups else None
    included = [j for j, g in enumerate(groups) if not info[g]["insufficient"]]
    why = None
    if len(included) < 2:
        why = f"{len(included)} group(s) with enough data: a spread over groups needs at least two"
        included = []
    return {
        "groups": groups,
        "info": info,
        "ref": ref,
        "included": included,
        "why": why,
        "G": level.indicator(attr, groups),
    }


def _undefined(summary: Mapping[str, Mapping], why: str | None) -> dict[str, str]:
    """Why each null summary is null."""
    return {
        k: why or "a rate is undefined in a group judged (no event, no non-event or no case selected)"
        for k, e in summary.items()
        if e.get("estimate") is None
    }


def attribute_block(level: _Level, attr: str, reference: str | None, thresholds: Sequence[Mapping]) -> dict:
    """Everything of one attribute at one level (module docstring)."""
    plan = _attribute_plan(level, attr, reference)
    groups, info = plan["groups"], plan["info"]
    out: dict[str, Any] = {
        "reference": reference,
        "groups": info,
        "included": [groups[j] for j in plan["included"]],
        "excluded_insufficient": [g for g in groups if info[g]["insufficient"]],
        "thresholds": [],
    }
    if plan["ref"] is None:
        out["reference_reason"] = f"reference group {reference!r} has no case here: no gaps to it"
    for t in thresholds:
        block = _threshold_block(level, attr, t, plan)
        block["undefined"] = _undefined(block["summary"], plan["why"])
        out["thresholds"].append(block)
    cal = _calibration_block(level, attr, plan)
    cal["undefined"] = _undefined(cal["summary"], plan["why"])
    out["calibration"] = cal
    decision = list(getattr(level.settings, "decision_thresholds", ()) or ())
    if decision:  # only with the protocol's decision section: outputs without it are unchanged
        out["decision"] = []
        for t in decision:
            block = _decision_block(level, float(t), plan)
            block["undefined"] = _undefined(block["summary"], plan["why"])
            out["decision"].append(block)
    return out


def level_block(level: _Level, references: Mapping[str, str | None], thresholds: Sequence[Mapping]) -> dict:
    """``{"n", "n_events", "attributes": {attr: ...}}`` of one level."""
    return {
        "n": int(level.n),
        "n_events": int(level.y.sum()),
        "thresholds": [dict(t) for t in thresholds],
        "attributes": {a: attribute_block(level, a, references.get(a), thresholds) for a in level.columns},
    }


# ---- the analysis ------------------------------------------------------------------------------------


def operating_thresholds(settings, block: Mapping | None) -> list[dict]:
    """The thresholds judged at a level: the protocol's (``kind: "protocol"``) and the block's
    target-sensitivity threshold (``kind: "target_sensitivity"``, ``carried`` from the development site
    or set on the block's own cases), as in metrics.json."""
    out = [{"threshold": float(t), "kind": "protocol", "carried": False} for t in settings.thresholds]
    tgt = (block or {}).get("target_sensitivity") or {}
    if _num(tgt.get("threshold")) is not None:
        out.append(
            {
                "threshold": float(tgt["threshold"]),
                "kind": "target_sensitivity",
                "carried": bool(tgt.get("carried")),
                "target": tgt.get("target"),
            }
        )
    return out


def default_reference(col: np.ndarray) -> str | None:
    """The largest group that is not ``missing`` (ties: the first in group order); None when none."""
    values = sorted((g for g in set(col) if g != MISSING), key=group_sort_key)
    if not values:
        return None
    counts = {g: int((col == g).sum()) for g in values}
    return max(values, key=lambda g: (counts[g], -values.index(g)))


def references(groups, declared: Mapping[str, str] | None, *, file=None) -> dict[str, dict[str, str | None]]:
    """``{attr: {"group", "rule"}}``: the protocol's ``fairness.reference`` where given (checked to be a
    group of the data: :class:`InputError` otherwise), else the largest group pooled over sites."""
    declared = dict(declared or {})
    out: dict[str, dict[str, str | None]] = {}
    for attr in groups.columns:
        col = groups[attr].astype(str).to_numpy()
        if attr in declared:
            g = str(declared[attr])
            if g not in set(col):
                raise InputError(
                    f"fairness reference group {g!r} of subgroup {attr!r} has no case",
                    file=file,
                    field=f"fairness.reference.{attr}",
                    expected=f"one of {sorted(set(col), key=group_sort_key)}",
                )
            out[attr] = {"group": g, "rule": "protocol (fairness.reference)"}
        else:
            out[attr] = {"group": default_reference(col), "rule": "largest group pooled over sites (not missing)"}
    return out


def fairness_analysis(
    table,
    groups,
    *,
    settings,
    metrics: Mapping,
    sites: Sequence[str],
    reference: Mapping[str, str] | None = None,
    file=None,
) -> dict | None:
    """``fairness.json`` for a binary predictions ``table`` and its subgroup columns ``groups`` (the
    frame of :func:`validate.cohort.derive_subgroups`, row-aligned); ``metrics``: the run's
    metrics.json (its target-sensitivity thresholds); ``reference``: the protocol's
    ``fairness.reference``. None for other tasks or without subgroups."""
    if table.task != "binary" or groups is None or groups.shape[1] == 0:
        return None
    refs = references(groups, reference, file=file)
    ref_groups = {a: r["group"] for a, r in refs.items()}
    y, p, z = table.y(), table.prob(), table.logit()
    cols = {a: groups[a].astype(str).to_numpy() for a in groups.columns}
    clusters = table.clusters(settings.cluster_by)
    site_ids = table.site_ids.astype(str)
    pooled = _Level(y, p, z, cols, settings, clusters=clusters, strata=site_ids)
    out: dict[str, Any] = {
        "task": "binary",
        "n_bootstrap": settings.n_bootstrap,
        "ci_level": settings.ci_level,
        "seed": settings.seed,
        "attributes": list(groups.columns),
        "groups": {a: sorted(set(c), key=group_sort_key) for a, c in cols.items()},
        "references": refs,
        "definitions": DEFINITIONS,
        "overall": level_block(pooled, ref_groups, operating_thresholds(settings, metrics.get("overall"))),
        "sites": {},
    }
    for s in sites:
        m = site_ids == str(s)
        if not m.any():
            continue
        level = _Level(
            y[m],
            p[m],
            z[m],
            {a: c[m] for a, c in cols.items()},
            settings,
            clusters=None if clusters is None else clusters[m],
        )
        block = (metrics.get("sites") or {}).get(s)
        out["sites"][str(s)] = level_block(level, ref_groups, operating_thresholds(settings, block))
    return out
