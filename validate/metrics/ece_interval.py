"""Intervals for the binned calibration errors (ECE, adaptive ECE, MCE) that contain their estimate.

Why not the percentile interval. A binned calibration error is the absolute value of per-bin gaps
summed (ECE) or maximised (MCE). |·| is not smooth at 0, so the plug-in is biased upward, and a
bootstrap replicate — one more layer of sampling noise on the gaps — is biased upward again: the
percentile interval sits above the estimate and, for a well calibrated model, never covers the true
error 0 (pooled heart ECE 0.028 had the interval 0.032–0.066). This is the failure of the bootstrap at a
boundary (Andrews 2000, Econometrica 68:399); bias corrections (BCa; the debiased ECE of Kumar, Liang &
Ma 2019, "Verified uncertainty calibration", NeurIPS) shrink the bias but leave a share of it that grows
with the number of bins relative to the interval's width.

The remedy here: bound the error of the estimate instead of resampling the estimate.

- **ECE and adaptive ECE** (``method: "bootstrap_bound"``). With bins b, S_b = Σ_{i∈b}(y_i − p_i) and N
  cases, ECE = Σ_b |S_b / N| is the L1 norm of the vector of means m_b = S_b / N; the true ECE is the
  L1 norm of their expectations μ_b. By the triangle inequality |ECE − ECE_true| ≤ Δ = Σ_b |m_b − μ_b|,
  the L1 error of a vector of means — a smooth statistic whose distribution the (patient-clustered,
  site-stratified) bootstrap approximates consistently by Δ* = Σ_b |m*_b − m_b|. With c the ``level``
  quantile of Δ*, the interval [max(0, ECE − c), ECE + c] covers the true ECE with probability at
  least ``level`` whatever it is, exactly ``level`` when the model is perfectly calibrated (then ECE = Δ),
  and always contains its estimate (its upper end is never below the percentile interval's: see
  :func:`bound_entry`). Adaptive ECE uses the sample's equal-mass groups as its bins
  (the estimand is the calibration error over those groups). Conservative away from 0: where all gaps
  are far from 0 the interval is about twice as wide as needed.
- **MCE** (``method: "wilson_bonferroni"``). max_b |gap_b| is bounded the same way by the largest
  per-bin error, but the bootstrap of a bin with one or two cases has almost no spread, so the per-bin
  intervals are Wilson score intervals (Wilson 1927) on each non-empty bin's observed rate, simultaneous
  by Bonferroni (level 1 − (1 − ``level``)/K over K non-empty bins). With G_b = [lo_b − p̄_b, hi_b − p̄_b]
  the interval is [max_b dist(0, G_b), max_b max|G_b|]: it contains the true MCE whenever every bin's
  interval holds its rate (probability ≥ ``level``) and always contains its estimate. Cases are treated
  as independent within a bin (patient clustering is not reflected: several cases per patient make it
  too narrow), and a bin of one case gives an interval of most of [0, 1] — MCE is that unstable.

Each entry also carries ``debiased`` (ECE and adaptive ECE): the Gaussian debiased estimate of Kumar et
al. 2019 (§5), per bin 2|ḡ_b| − E|N(ḡ_b, σ_b²)| with σ_b² = ȳ_b(1 − ȳ_b)/n_b, in closed form
(E|N(μ, σ²)| = σ√(2/π) e^(−μ²/2σ²) + μ(1 − 2Φ(−μ/σ))) instead of Kumar's Monte Carlo; it may be
negative (consistent with perfect calibration) and is reported, not gated.
"""

from __future__ import annotations

import math

import numpy as np

from validate.metrics.calibration import adaptive_groups

#: the metrics whose interval this module gives, and the interval's method name in their entries
METHODS = {"ece": "bootstrap_bound", "ece_adaptive": "bootstrap_bound", "mce": "wilson_bonferroni"}
ERROR = "{}~error"  # replicate key of the bootstrap error Δ* of a metric


def adaptive_membership(n: int, bins: int) -> np.ndarray:
    """The equal-mass group of each position of the sorted cases (``np.array_split`` sizes)."""
    return np.repeat(np.arange(bins), adaptive_groups(n, bins))


class BinnedGaps:
    """One block's per-bin sums of y − p and counts (equal-width bins as ECE, and the sample's
    equal-mass groups as adaptive ECE), in the sorted order of
    :class:`~validate.metrics.replicates.BinaryCases`."""

    def __init__(self, cases):
        self.cases = cases
        n, bins = cases.n, cases.bins
        resid = cases.resid  # y − p of the sorted cases, kept once by the cases
        idx = cases.bin_idx  # computed for these sums only, not kept
        group = adaptive_membership(n, bins)
        self.gap = {
            "ece": np.bincount(idx, weights=resid, minlength=bins),
            "ece_adaptive": np.bincount(group, weights=resid, minlength=bins),
        }
        self.count = {
            "ece": np.bincount(idx, minlength=bins).astype(np.float64),
            "ece_adaptive": np.bincount(group, minlength=bins).astype(np.float64),
        }
        self.events = {
            "ece": np.bincount(idx, weights=cases.y_float, minlength=bins),
            "ece_adaptive": np.bincount(group, weights=cases.y_float, minlength=bins),
        }
        self.sum_p = np.bincount(idx, weights=cases.p, minlength=bins)
        self.n = n
        self.resid = resid
        # sorted by p, the cases of an equal-width bin are one run, as are those of an equal-mass
        # group: a replicate's per-bin sum is then one dot product over the run, with no per-case
        # matrix. A score that is not monotone in p (bins not in runs) keeps the residual columns.
        self.columns: np.ndarray | None = None
        self.runs: tuple[np.ndarray, np.ndarray] | None = None  # (first, end) case of each bin's run
        if n == 0 or bool(np.all(idx[1:] >= idx[:-1])):
            edges = np.searchsorted(idx, np.arange(bins + 1), side="left")
            group_edges = np.r_[0, np.cumsum(adaptive_groups(n, bins))]
            self.runs = np.r_[edges[:-1], group_edges[:-1]], np.r_[edges[1:], group_edges[1:]]
        else:
            self.columns = np.zeros((n, 2 * bins))
            self.columns[np.arange(n), idx] = resid
            self.columns[np.arange(n), bins + group] = resid

    def error_replicates(self, ws: np.ndarray) -> dict[str, np.ndarray]:
        """Δ* = Σ_b |S*_b / N* − S_b / N| of every replicate (rows of ``ws``, in sorted order), for ECE
        and adaptive ECE: per bin, the weights of its run of cases times their residuals."""
        bins = self.cases.bins
        if self.runs is None:
            assert self.columns is not None
            sums = ws @ self.columns
        else:
            starts, ends = self.runs
            sums = np.zeros((ws.shape[0], 2 * bins))
            for j, (a, b) in enumerate(zip(starts, ends, strict=True)):
                if b > a:
                    sums[:, j] = ws[:, a:b] @ self.resid[a:b]
        total = ws.sum(axis=1)[:, None]
        out = {}
        for name, reps in (("ece", sums[:, :bins]), ("ece_adaptive", sums[:, bins:])):
            with np.errstate(invalid="ignore", divide="ignore"):
                out[ERROR.format(name)] = np.abs(reps / total - self.gap[name] / self.n).sum(axis=1)
        return out

    def debiased(self, name: str) -> float:
        """Kumar et al. 2019's Gaussian debiased ECE over this block's bins (see the module docstring)."""
        from scipy.stats import norm

        n, s, k = self.count[name], self.gap[name], self.events[name]
        keep = n > 0
        n, s, k = n[keep], s[keep], k[keep]
        g = s / n
        rate = k / n
        sd = np.sqrt(rate * (1 - rate) / n)
        with np.errstate(invalid="ignore", divide="ignore"):
            folded = sd * math.sqrt(2 / math.pi) * np.exp(-(g**2) / (2 * sd**2)) + g * (1 - 2 * norm.cdf(-g / sd))
        folded = np.where(sd > 0, folded, np.abs(g))
        return float(np.sum(n * (2 * np.abs(g) - folded)) / self.n)

    def mce_interval(self, level: float) -> tuple[float, float]:
        """Wilson–Bonferroni projection interval of MCE (see the module docstring)."""
        from validate.numerics import wilson_interval

        n, k = self.count["ece"], self.events["ece"]
        keep = n > 0
        K = int(keep.sum())
        if K == 0:
            return float("nan"), float("nan")
        lo, hi = wilson_interval(k[keep], n[keep], 1 - (1 - level) / K)
        mean_p = self.sum_p[keep] / n[keep]
        a, b = lo - mean_p, hi - mean_p
        nearest = np.where((a <= 0) & (b >= 0), 0.0, np.minimum(np.abs(a), np.abs(b)))
        return float(nearest.max()), float(np.maximum(np.abs(a), np.abs(b)).max())


def bound_entry(name: str, estimate: float, replicates: dict, gaps: BinnedGaps | None, level: float) -> dict | None:
    """``{"ci_low", "ci_high", "method"}`` (and ``debiased``) of ECE, adaptive ECE or MCE, or None when
    no replicates were drawn (the block gives no interval then, as for every bootstrap metric).

    The upper bound is never below the percentile interval's upper bound (the ``(1 + level)/2``
    quantile of the metric's own replicates): an upper-bound gate (``max`` on ``ci_high``) is never
    judged more leniently than the replicates themselves would judge it — MCE's Wilson intervals ignore
    patient clustering, and no bound may read as a PASS that the bootstrap would not give."""
    if gaps is None or not replicates or not math.isfinite(estimate):
        return None
    own = replicates.get(name)
    top = _upper_quantile(own, 0.5 + level / 2) if own is not None else float("nan")
    if name == "mce":
        lo, hi = gaps.mce_interval(level)
        # the projection contains the estimate exactly; its gaps (Σp/n against the kernel's Σ(y − p)/n)
        # differ from the estimate's in the last bit, which must not put the estimate outside
        lo, hi = min(lo, estimate), max(hi, estimate)
        return {"ci_low": lo, "ci_high": _at_least(hi, top), "method": METHODS[name]}
    reps = replicates.get(ERROR.format(name))
    if reps is None:
        return None
    c = _upper_quantile(reps, level)
    return {
        "ci_low": max(0.0, estimate - c),
        "ci_high": _at_least(estimate + c, top),
        "method": METHODS[name],
        "debiased": gaps.debiased(name),
    }


def _at_least(value: float, floor: float) -> float:
    return max(value, floor) if math.isfinite(floor) else value


def _upper_quantile(reps: np.ndarray, level: float) -> float:
    """The type-7 ``level`` quantile of the finite replicates (NaN when none is finite)."""
    r = np.asarray(reps, dtype=np.float64)
    r = r[np.isfinite(r)]
    return float(np.quantile(r, level)) if r.size else float("nan")


def with_note(e: dict) -> dict:
    """A bootstrap percentile entry, with a ``note`` when its estimate lies outside its interval.

    That happens for statistics whose replicates are biased relative to the estimate — maxima and
    upper quantiles of errors (Emax, E90) or absolute values near 0, where resampling adds its own
    noise — and is not a calculation error; the note says so, so that no such entry goes unexplained.
    """
    est, lo, hi = e.get("estimate"), e.get("ci_low"), e.get("ci_high")
    if est is None or lo is None or hi is None or lo <= est <= hi:
        return e
    side = "below" if est < lo else "above"
    e["note"] = (
        f"the estimate lies {side} its bootstrap percentile interval: the replicates of this statistic are "
        f"biased {'upward' if side == 'below' else 'downward'} relative to it (resampling adds its own noise "
        "to a maximum, a quantile or an absolute value near 0), so the interval shows their spread, not "
        "an error in the estimate"
    )
    return e
