"""Argument checks and the probability floor shared by every metric.

Metrics validate their arguments once at the public entry point and then work on float64 arrays.
Probabilities are clipped to [1e-15, 1 - 1e-15] before any logit or log (DESIGN.md): never coarser,
because real classifiers put most of their mass below 1e-7 and temperature scaling needs it.
"""

from __future__ import annotations

import numpy as np

# the floor and the links are defined once, in validate.numerics; re-exported here for the metrics
from validate.numerics import PROB_FLOOR, clip_probability, logit, sigmoid  # noqa: F401


def as_labels(y, name: str = "y") -> np.ndarray:
    """Binary labels as a float64 vector of 0/1."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.float64)
    yf = y.astype(np.float64)
    if not np.all((yf == 0) | (yf == 1)):
        raise ValueError(f"{name} must contain only 0 and 1")
    return yf


def as_scores(s, n: int, name: str = "p") -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != n:
        raise ValueError(f"{name} must be a vector of length {n}, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite")
    return s


def as_probabilities(p, n: int, name: str = "p") -> np.ndarray:
    p = as_scores(p, n, name)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"{name} must lie in [0, 1]")
    return p


def binary_args(y, p, *, probabilities: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checked (y, p): y 0/1 float64, p finite float64 of the same length (in [0,1] if probabilities)."""
    y = as_labels(y)
    p = as_probabilities(p, y.shape[0]) if probabilities else as_scores(p, y.shape[0], "score")
    return y, p


def as_weights(w, n: int) -> np.ndarray:
    """Case weights as float64 of shape (n,) or (r, n) (replicates in rows); ``None`` means ones."""
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=np.float64)
    if w.shape[-1] != n or w.ndim > 2:
        raise ValueError(f"weights must have shape ({n},) or (r, {n}), got {w.shape}")
    return w


def fast_binary_args(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Checked (y, p) without copies, by min/max reductions only (for 10^7-case metrics): y integer or
    float 0/1 (kept in its dtype), p float64 in [0, 1] (NaN fails the range test)."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"y and p must be vectors of the same length, got {y.shape} and {p.shape}")
    if y.size == 0:
        raise ValueError("no cases")
    if y.dtype == bool:
        y = y.view(np.uint8)
    if not (y.min() >= 0 and y.max() <= 1):
        raise ValueError("y must contain only 0 and 1")
    if y.dtype.kind == "f" and not np.all((y == 0) | (y == 1)):
        raise ValueError("y must contain only 0 and 1")
    if not (p.min() >= 0 and p.max() <= 1):
        raise ValueError("p must lie in [0, 1] (and not be NaN)")
    return y, p
