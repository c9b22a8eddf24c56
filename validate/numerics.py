"""The probability floor, the maps between logits and probabilities, and the Wilson interval: one
definition each, imported by the predictions reader, the metrics, the calibrators, scoring and the
analyses (issue #13: these were defined up to six times, with different edge cases).

- :data:`PROB_FLOOR`: probabilities are clipped to [1e-15, 1 − 1e-15] before any logit or log
  (DESIGN.md). Never coarser: real classifiers put much of their mass below 1e-7 and temperature
  scaling needs it.
- :func:`logit` / :func:`sigmoid` (binary and per label), :func:`log_probability` / :func:`softmax` /
  :func:`log_softmax` (multiclass: log-probabilities are exact stand-ins for logits, since softmax is
  unchanged by a per-row shift), :func:`one_vs_rest_log_odds` (what multiclass ranking statistics rank).
- :func:`wilson_interval`: the score interval of a binomial proportion.

Leaf module: imports numpy and scipy only, so anything in the package may import it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PROB_FLOOR = 1e-15


def clip_probability(p: Any) -> np.ndarray:
    """``p`` clipped to [1e-15, 1 − 1e-15] (float64)."""
    return np.clip(np.asarray(p, dtype=np.float64), PROB_FLOOR, 1.0 - PROB_FLOOR)


def logit(p: Any) -> np.ndarray:
    """log(p / (1 − p)) after clipping ``p`` to [1e-15, 1 − 1e-15], written log q − log1p(−q) so that
    it stays accurate near both ends."""
    q = clip_probability(p)
    return np.log(q) - np.log1p(-q)


def log_probability(p: Any) -> np.ndarray:
    """log p after the floor: log(clip(p, 1e-15, 1)). The multiclass stand-in for logits (no upper
    clip is needed: log 1 = 0 is finite)."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), PROB_FLOOR, 1.0))


def sigmoid(z: Any) -> np.ndarray:
    """The logistic function 1 / (1 + exp(−z)), overflow-free (scipy.special.expit)."""
    from scipy.special import expit

    return expit(np.asarray(z, dtype=np.float64))


def log_sigmoid(z: Any) -> np.ndarray:
    """log(sigmoid(z)) = −log(1 + exp(−z)), stable for large |z|."""
    return -np.logaddexp(0.0, -np.asarray(z, dtype=np.float64))


def softmax(z: Any, axis: int = 1) -> np.ndarray:
    """exp(z_k) / Σ_j exp(z_j) along ``axis`` (rows by default), shifted by the maximum first so exp
    cannot overflow (softmax is unchanged by the shift). Equals scipy.special.softmax."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z: Any, axis: int = 1) -> np.ndarray:
    """log softmax(z) = z − logsumexp(z), without forming the probabilities (no underflow to −inf)."""
    from scipy.special import logsumexp

    z = np.asarray(z, dtype=np.float64)
    return z - logsumexp(z, axis=axis, keepdims=True)


def one_vs_rest_log_odds(z: Any) -> np.ndarray:
    """log(p_k / (1 − p_k)) of softmax(z) for every class k, from the logits without forming p:
    z_k − logsumexp_{j≠k} z_j. Monotone in p_k, and distinct where p_k rounds to 1.0."""
    from scipy.special import logsumexp

    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    for k in range(z.shape[1]):
        others = np.delete(z, k, axis=1)
        out[:, k] = z[:, k] - logsumexp(others, axis=1)
    return out


def wilson_interval(k: Any, n: Any, level: float = 0.95):
    """Wilson score interval of a binomial proportion k/n (Wilson 1927, JASA 22:209; Newcombe 1998,
    Stat Med 17:857, method 3): with p = k/n and z the two-sided normal quantile of ``level``,
    centre (p + z²/2n) / (1 + z²/n), half-width z / (1 + z²/n) · √(p(1 − p)/n + z²/4n²), clipped to
    [0, 1]. Equals statsmodels' ``proportion_confint(method="wilson")``.

    ``k`` and ``n`` may be numbers (returns two floats) or arrays (returns two float64 arrays).

    n = 0 gives NaN (written as null in the bundle): no trials carry no information about the
    proportion, and its estimate k/n is undefined too. [0, 1] would look like an interval that was
    estimated — wide, but one a gate or a reader could take at face value — so it is not returned.
    """
    from scipy.stats import norm

    scalar = np.ndim(k) == 0 and np.ndim(n) == 0
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(norm.ppf(0.5 + level / 2.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    defined = n > 0
    # at k = 0 (k = n) the bound is exactly 0 (1); rounding leaves ~1e-19 and puts the estimate outside
    lo = np.where(defined, np.where(k == 0, 0.0, np.maximum(0.0, centre - half)), np.nan)
    hi = np.where(defined, np.where(k == n, 1.0, np.minimum(1.0, centre + half)), np.nan)
    if scalar:
        return float(lo), float(hi)
    return lo, hi
