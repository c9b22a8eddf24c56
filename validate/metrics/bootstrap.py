"""The bootstrap as replicate weights: stratified, clustered, seeded, deterministic, vectorised.

A bootstrap replicate is represented by frequency weights: how many times each case was drawn. Every
weighted metric of :mod:`validate.metrics` takes weights of shape (r, n), so r replicates cost one pass
over a matrix instead of r calls (one sort of the scores serves all replicates).

Resampling scheme (Davison & Hinkley 1997, §3.8): within each stratum (site) draw as many units as it
holds, with replacement; a unit is a cluster (patient) when ``clusters`` is given — all cases of a drawn
patient enter together, as often as the patient was drawn — else a case. Replicates are generated in
fixed blocks of 50, block b from ``numpy.random.default_rng([seed, b])``, so replicate k is the same
whatever chunk size the caller uses. Percentile intervals use type-7 quantiles of the finite replicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

RNG_BLOCK = 50


class Resampling:
    """Units (clusters within strata) of a sample of n cases, prepared once for many replicates.

    ``order`` (a permutation of the cases) asks for weight columns in that order — column i is case
    order[i] — so a caller that keeps its cases sorted gets its weights without a column gather of
    every replicate."""

    def __init__(self, n: int, clusters=None, strata=None, order=None):
        self.n = int(n)
        strata_codes = _codes(strata, self.n, "strata")
        cluster_codes = _codes(clusters, self.n, "clusters") if clusters is not None else np.arange(self.n)
        # a unit is a (stratum, cluster) pair: a patient seen at two sites is resampled within each
        pair = strata_codes.astype(np.int64) * (cluster_codes.max() + 1) + cluster_codes
        uniq, unit_of_case = np.unique(pair, return_inverse=True)
        unit_stratum = uniq // (cluster_codes.max() + 1)
        # units are sorted by stratum (np.unique sorts the pair code)
        _, self.stratum_start, self.stratum_size = np.unique(unit_stratum, return_index=True, return_counts=True)
        self.unit_of_case = unit_of_case.reshape(-1)
        self.n_units = uniq.size
        order = None if order is None else np.asarray(order, dtype=np.intp)
        if order is not None and (order.shape != (self.n,) or not np.array_equal(np.sort(order), np.arange(self.n))):
            raise ValueError(f"order must be a permutation of {self.n} cases")
        # each case its own unit in case order (no clusters, strata contiguous): counts of units are
        # counts of cases; with an order, a unit's draws are counted straight into its column
        identity = bool(self.n_units == self.n and np.array_equal(self.unit_of_case, np.arange(self.n)))
        self.column_of_unit = None
        self.unit_of_column = None
        if identity and order is not None:
            self.column_of_unit = np.empty(self.n, dtype=np.intp)
            self.column_of_unit[order] = np.arange(self.n)
        elif not identity:
            self.unit_of_column = self.unit_of_case if order is None else self.unit_of_case[order]
        self.dtype = np.int32 if self.n_units < 2**31 else np.int64

    def block(self, seed: int, b: int, k: int) -> np.ndarray:
        """Case weights of replicates b*50 .. b*50+k-1 (k <= 50), shape (k, n): within each stratum,
        as many unit draws (uniform integers, NumPy's unbiased bounded generator) as it holds units."""
        rng = np.random.default_rng([int(seed), int(b)])
        drawn = np.empty((RNG_BLOCK, self.n_units), dtype=self.dtype)
        for start, size in zip(self.stratum_start, self.stratum_size, strict=True):
            part = drawn[:, start : start + size]
            part[...] = rng.integers(0, size, size=(RNG_BLOCK, size), dtype=self.dtype)
            part += start
        out = np.empty((k, self.n))
        for r in range(k):
            if self.column_of_unit is not None:
                out[r] = np.bincount(self.column_of_unit[drawn[r]], minlength=self.n)
            elif self.unit_of_column is not None:
                out[r] = np.bincount(drawn[r], minlength=self.n_units)[self.unit_of_column]
            else:
                out[r] = np.bincount(drawn[r], minlength=self.n)
        return out


def _codes(values, n: int, name: str) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    _, codes = np.unique(arr.astype(str) if arr.dtype == object else arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def iter_bootstrap_weights(
    n_rep: int, n: int, *, clusters=None, strata=None, seed: int = 0, chunk: int = RNG_BLOCK, order=None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_replicate, weights)`` chunks of at most ``chunk`` replicates (rounded to whole
    RNG blocks of 50), weights of shape (k, n) float64 counts. Deterministic in ``seed``; with
    ``order``, the same weights with columns permuted (column i is case order[i])."""
    res = Resampling(n, clusters, strata, order)
    per = max(1, int(chunk) // RNG_BLOCK)
    nblocks = -(-int(n_rep) // RNG_BLOCK)
    for b0 in range(0, nblocks, per):
        parts = []
        for b in range(b0, min(nblocks, b0 + per)):
            k = min(RNG_BLOCK, int(n_rep) - b * RNG_BLOCK)
            parts.append(res.block(seed, b, k))
        yield b0 * RNG_BLOCK, np.concatenate(parts, axis=0)


def bootstrap_weights(n_rep: int, n: int, *, clusters=None, strata=None, seed: int = 0) -> np.ndarray:
    """All ``n_rep`` replicate weights at once, shape (n_rep, n) (see :func:`iter_bootstrap_weights`
    to bound memory). Row k is replicate k: how often each case was drawn."""
    if n_rep == 0:
        return np.zeros((0, n))
    return np.concatenate(
        [w for _, w in iter_bootstrap_weights(n_rep, n, clusters=clusters, strata=strata, seed=seed)], axis=0
    )


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_rep: int = 1000,
    clusters=None,
    strata=None,
    seed: int = 0,
    chunk: int = 200,
) -> np.ndarray:
    """Evaluate ``statistic(weights)`` — weights (k, n) -> values (k,) or (k, m) — on every replicate,
    chunk by chunk; returns shape (n_rep,) or (n_rep, m)."""
    out = [
        np.asarray(statistic(w))
        for _, w in iter_bootstrap_weights(n_rep, n, clusters=clusters, strata=strata, seed=seed, chunk=chunk)
    ]
    return np.concatenate(out, axis=0) if out else np.zeros((0,))


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap percentile interval: type-7 quantiles (R's default, numpy "linear") at (1 ∓ level)/2
    of the finite replicates (Efron & Tibshirani 1993, §13.3). NaN when none is finite.
    For a 2-d array, intervals per column are returned as two arrays."""
    r = np.asarray(replicates, dtype=np.float64)
    qs = [0.5 - level / 2, 0.5 + level / 2]
    if r.ndim == 1:
        r = r[np.isfinite(r)]
        if r.size == 0:
            return float("nan"), float("nan")
        lo, hi = np.quantile(r, qs)
        return float(lo), float(hi)
    lo = np.full(r.shape[1], np.nan)
    hi = np.full(r.shape[1], np.nan)
    for j in range(r.shape[1]):
        lo[j], hi[j] = percentile_interval(r[:, j], level)
    return lo, hi


def paired_bootstrap_difference(
    metric_a: Callable[[np.ndarray], np.ndarray],
    metric_b: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    n_rep: int = 1000,
    clusters=None,
    strata=None,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Paired bootstrap of a difference of two metrics on the same cases (e.g. ECE after two
    calibration methods): both see the same replicate weights. ``metric_x(weights (k, n)) -> (k,)``.

    Returns ``{"estimate", "ci_low", "ci_high", "method": "bootstrap", "p_value"}`` where estimate is
    metric_a − metric_b on the full sample and p_value the two-sided bootstrap p-value
    2 min(P*(d ≤ 0), P*(d ≥ 0)) (capped at 1)."""
    ones = np.ones((1, n))
    est = float(np.asarray(metric_a(ones))[0] - np.asarray(metric_b(ones))[0])
    d = bootstrap_replicates(
        lambda w: np.asarray(metric_a(w)) - np.asarray(metric_b(w)),
        n,
        n_rep=n_rep,
        clusters=clusters,
        strata=strata,
        seed=seed,
    )
    lo, hi = percentile_interval(d, level)
    fin = d[np.isfinite(d)]
    p = float(min(1.0, 2 * min(np.mean(fin <= 0), np.mean(fin >= 0)))) if fin.size else None
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "method": "bootstrap", "p_value": p}
