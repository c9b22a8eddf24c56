"""Pointwise bootstrap bands of the smoothed calibration curves (lowess and loess) on a fixed grid.

The curves are those of the calibration metrics (:mod:`validate.metrics.smooth`): R's
``lowess(p, y, iter = 0)`` as ``rms::val.prob`` draws it (Eavg, E50, E90, Emax) and R's ``loess(y ~ p)``
with its defaults (ICI; Austin & Steyerberg 2019). Each bootstrap replicate — the metrics engine's own
replicate weights (:func:`~validate.metrics.bootstrap.iter_bootstrap_weights`: the same seed, patient
clusters and site strata, so replicate k is the k-th replicate of the block's intervals) — is expanded
to its resample (case j repeated w_j times), both smoothers are fitted to it, and each fit is evaluated
on a fixed grid of predicted probabilities spanning the block's range (lowess between its fitted
points, ties averaged, as ``approx``; loess by its own interpolation). At each grid point the band is the
type-7 percentile interval of the replicates' values (Efron & Tibshirani 1993, §13.3), as the band of
``CalibrationCurves::val.prob.ci.2`` and ``pmcalibration`` is pointwise.

**Pointwise, not simultaneous**: each grid point's interval holds its own level; the whole curve lies
inside the band with a lower probability. A replicate contributes only at grid points inside its own
range of p (no extrapolation); where fewer than half of the replicates reach a point, the band is null.
Values are clipped to [0, 1] as the drawn smooth is (clipping is monotone, so it commutes with the
percentiles).
"""

from __future__ import annotations

import numpy as np

from validate.metrics.bootstrap import iter_bootstrap_weights, percentile_interval, replicate_chunk
from validate.metrics.smooth import _interp_ties_mean, clowess, loess_smooth

GRID = 101
# the moment engine is faster than fitting expanded resamples from a few dozen cases on (measured: 4x
# at 100 to 700 cases)
FAST_MIN_N = 20


def smooth_grid(p: np.ndarray, size: int = GRID) -> np.ndarray:
    """The fixed grid: ``size`` equally spaced probabilities from the smallest to the largest p."""
    return np.linspace(float(np.min(p)), float(np.max(p)), size)


def smooth_curves(xs: np.ndarray, ys: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowess and loess fits of ``ys`` on sorted ``xs`` at ``grid`` (NaN outside [xs₀, xs₋₁], and
    everywhere when a smoother is undefined: fewer than 3 cases, one distinct p, too few neighbours)."""
    nan = np.full(grid.size, np.nan)
    if xs.size < 3 or xs[0] == xs[-1]:
        return nan, nan.copy()
    inside = (grid >= xs[0]) & (grid <= xs[-1])
    low = np.where(inside, _interp_ties_mean(xs, clowess(xs, ys), grid), np.nan)
    try:
        loe = np.where(inside, loess_smooth(xs, ys, xout=grid), np.nan)
    except ValueError:
        loe = nan.copy()
    return np.clip(low, 0.0, 1.0), np.clip(loe, 0.0, 1.0)


def replicate_curves(
    y, p, W: np.ndarray, grid: np.ndarray, *, fast: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Both smooths of every replicate (rows of the case weights ``W``, in case order) on ``grid``:
    two arrays of shape (replicates, grid). From :data:`FAST_MIN_N` cases (or ``fast``) from the counts
    by the moment engine of :mod:`validate.metrics.smooth_bootstrap`, as the metrics' intervals are; else by
    fitting each expanded resample (both agree to rounding: tests/test_calibration_bands.py)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    if fast if fast is not None else p.size >= FAST_MIN_N:
        from validate.metrics.replicates import SMOOTH_CELLS
        from validate.metrics.smooth_bootstrap import SortedCases, smooth_errors

        sc = SortedCases(ps, ys)
        step = max(1, SMOOTH_CELLS // p.size)  # a few replicates at a time, as the metrics' smoothers
        parts = [
            smooth_errors(sc, np.ascontiguousarray(W[r0 : r0 + step, order]), grid=grid)
            for r0 in range(0, W.shape[0], step)
        ]
        low = np.concatenate([part["lowess_curve"] for part in parts])
        loe = np.concatenate([part["loess_curve"] for part in parts])
        return np.clip(low, 0.0, 1.0), np.clip(loe, 0.0, 1.0)
    low = np.empty((W.shape[0], grid.size))
    loe = np.empty((W.shape[0], grid.size))
    for r, w in enumerate(W):
        rep = np.repeat(np.arange(p.size), w[order].astype(np.int64))
        low[r], loe[r] = smooth_curves(ps[rep], ys[rep], grid)
    return low, loe


def _band(values: np.ndarray, level: float) -> tuple[list, list]:
    """Pointwise percentile interval per grid column; null where fewer than half the replicates reach."""
    lo, hi = percentile_interval(values, level)
    enough = np.isfinite(values).sum(axis=0) >= 0.5 * values.shape[0]
    return _nums(np.where(enough, lo, np.nan)), _nums(np.where(enough, hi, np.nan))


def _nums(a) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64)]


def smooth_band(
    y, p, *, n_rep: int, seed: int, level: float, clusters=None, strata=None, size: int = GRID
) -> dict | None:
    """``{grid, lowess, loess, lowess_low, lowess_high, loess_low, loess_high, level, kind:
    "pointwise", replicates}`` for one set of binary cases (see the module docstring), or None without
    replicates or when the smooths are undefined on the cases themselves."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if n_rep <= 0 or y.size < 3 or np.ptp(p) == 0:
        return None
    grid = smooth_grid(p, size)
    order = np.argsort(p, kind="stable")
    low_point, loe_point = smooth_curves(p[order], y[order], grid)
    lows, loes = [], []
    chunk = replicate_chunk(y.size)
    for _, W in iter_bootstrap_weights(n_rep, y.size, clusters=clusters, strata=strata, seed=seed, chunk=chunk):
        a, b = replicate_curves(y, p, W, grid)
        lows.append(a)
        loes.append(b)
    low_all, loe_all = np.concatenate(lows), np.concatenate(loes)
    lowess_low, lowess_high = _band(low_all, level)
    loess_low, loess_high = _band(loe_all, level)
    return {
        "grid": _nums(grid),
        "lowess": _nums(low_point),
        "loess": _nums(loe_point),
        "lowess_low": lowess_low,
        "lowess_high": lowess_high,
        "loess_low": loess_low,
        "loess_high": loess_high,
        "level": float(level),
        "kind": "pointwise",
        "replicates": int(low_all.shape[0]),
    }
